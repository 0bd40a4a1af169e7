"""MLCube entrypoint of the FeTS model: `infer` (typer; a second command keeps typer's subcommands)."""
from pathlib import Path

import typer
import yaml
from src.my_logic import run_inference

app = typer.Typer()
DEFAULT_CHECKPOINTS = "/mlcube_project/model_ckpts"  # inside the image (federated evaluation passes none)
DEFAULT_PARAMETERS = "/mlcube_project/parameters.yaml"


@app.command("example")
def example(parameters_file: str = typer.Option(..., "--parameters_file")):
    print(parameters_file)


@app.command("infer")
def infer(
    data_path: str = typer.Option(..., "--data_path"),
    output_path: str = typer.Option(..., "--output_path"),
    parameters_file: str = typer.Option(..., "--parameters_file"),
    ckpt_path: str = typer.Option(..., "--checkpoint_path"),
):
    if not Path(ckpt_path).exists():
        print(f"WARNING: no checkpoints at {ckpt_path}; using {DEFAULT_CHECKPOINTS}")
        ckpt_path = DEFAULT_CHECKPOINTS
    if not Path(parameters_file).exists():
        print(f"WARNING: no parameters file at {parameters_file}; using {DEFAULT_PARAMETERS}")
        parameters_file = DEFAULT_PARAMETERS
    with open(parameters_file) as stream:
        parameters = yaml.safe_load(stream)
    run_inference(data_path, output_path, ckpt_path, parameters["APPLICATION_NAME"], parameters["APPLICATION_VERSION"])


if __name__ == "__main__":
    app()
