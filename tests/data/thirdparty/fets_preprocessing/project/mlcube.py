"""MLCube entrypoint: prepare (through run.sh, as the original), sanity_check and statistics."""
import subprocess

import typer

app = typer.Typer()


@app.command("prepare")
def prepare(
    data_path: str = typer.Option(..., "--data_path"),
    labels_path: str = typer.Option(..., "--labels_path"),
    parameters_file: str = typer.Option(..., "--parameters_file"),
    output_path: str = typer.Option(..., "--output_path"),
):
    # like the original: the script's path inside the image, and its exit code ignored
    subprocess.run(["bash", "/workspace/run.sh", data_path, parameters_file, output_path])


@app.command("sanity_check")
def sanity_check(data_path: str = typer.Option(..., "--data_path"), parameters_file: str = typer.Option(..., "--parameters_file")):
    subprocess.run(["python3", "sanity_check.py", f"--data_path={data_path}"], check=True)


@app.command("statistics")
def statistics(
    data_path: str = typer.Option(..., "--data_path"),
    parameters_file: str = typer.Option(..., "--parameters_file"),
    out_path: str = typer.Option(..., "--output_path"),
):
    subprocess.run(["python3", "statistics.py", f"--data_path={data_path}", f"--out_file={out_path}"], check=True)


if __name__ == "__main__":
    app()
