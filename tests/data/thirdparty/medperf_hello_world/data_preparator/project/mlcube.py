"""MLCube entrypoint: each task runs a script of the project as a subprocess (a typer CLI)."""
import subprocess

import typer

app = typer.Typer()


def run_script(command: str) -> None:
    subprocess.run(command.split(), cwd=".", check=True)


@app.command("prepare")
def prepare(
    data_path: str = typer.Option(..., "--data_path"),
    labels_path: str = typer.Option(..., "--labels_path"),
    params_file: str = typer.Option(..., "--parameters_file"),
    out_path: str = typer.Option(..., "--output_path"),
):
    run_script(f"python3 prepare.py --names_path={data_path} --labels_path={labels_path} --out={out_path}")


@app.command("sanity_check")
def sanity_check(data_path: str = typer.Option(..., "--data_path"), params_file: str = typer.Option(..., "--parameters_file")):
    run_script(f"python3 sanity_check.py --data_path={data_path}")


@app.command("statistics")
def statistics(
    data_path: str = typer.Option(..., "--data_path"),
    params_file: str = typer.Option(..., "--parameters_file"),
    output_path: str = typer.Option(..., "--output_path"),
):
    run_script(f"python3 statistics.py --data_path={data_path} --out_file={output_path}")


if __name__ == "__main__":
    app()
