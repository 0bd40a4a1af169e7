"""Greets the person named in a file and appends the greeting to a chat log (typer CLI: one command per task)."""
from datetime import datetime

import typer

app = typer.Typer()


def read_name(path: str) -> str:
    with open(path) as stream:
        return stream.read().strip()


@app.command()
def hello(name_file: str = typer.Option(..., "--name"), chat_file: str = typer.Option(..., "--chat")):
    with open(chat_file, "a") as chat:
        chat.write(f"[{datetime.now()}]  Hi, {read_name(name_file)}! Nice to meet you.\n")


@app.command()
def bye(name_file: str = typer.Option(..., "--name"), chat_file: str = typer.Option(..., "--chat")):
    with open(chat_file, "a") as chat:
        chat.write(f"[{datetime.now()}]  Bye, {read_name(name_file)}! It was great talking to you.\n")


if __name__ == "__main__":
    app()
