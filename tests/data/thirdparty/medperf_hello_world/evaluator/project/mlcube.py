"""MLCube entrypoint of the metrics cube: `evaluate` runs app.py on the two CSV files."""
import os
import subprocess

import typer

app = typer.Typer()


@app.command("evaluate")
def evaluate(
    labels: str = typer.Option(..., "--labels"),
    predictions: str = typer.Option(..., "--predictions"),
    parameters_file: str = typer.Option(..., "--parameters_file"),
    output_path: str = typer.Option(..., "--output_path"),
):
    command = ["python3", "app.py", f"--labels_csv={os.path.join(labels, 'labels.csv')}",
               f"--preds_csv={os.path.join(predictions, 'predictions.csv')}", f"--parameters_file={parameters_file}",
               f"--output_file={output_path}"]
    subprocess.run(command, cwd=".", check=True)


@app.command("hotfix")
def hotfix():
    pass


if __name__ == "__main__":
    app()
