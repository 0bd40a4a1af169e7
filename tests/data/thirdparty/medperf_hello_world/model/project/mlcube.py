"""MLCube entrypoint of the model: `infer` runs app.py; `hotfix` keeps typer's subcommands."""
import os
import subprocess

import typer
import yaml

app = typer.Typer()


@app.command("infer")
def infer(
    data_path: str = typer.Option(..., "--data_path"),
    params_file: str = typer.Option(..., "--parameters_file"),
    greetings: str = typer.Option(..., "--greetings"),
    out_path: str = typer.Option(..., "--output_path"),
):
    with open(params_file) as f:
        params = yaml.safe_load(f)
    command = ["python3", "app.py", f"--names={os.path.join(data_path, 'names.csv')}", f"--greetings={greetings}", f"--out={out_path}"]
    if params["uppercase"]:
        command.append("--uppercase=true")
    subprocess.run(command, cwd=".", check=True)


@app.command("hotfix")
def hotfix():
    pass


if __name__ == "__main__":
    app()
