"""docker-compose.yml and the Dockerfile, checked structurally (Docker cannot run here): the
services, ports, healthchecks and start order, and that every ``pgcast`` command they run is a
real command of the CLI with real options (parsed by click itself)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from broadcaster.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of every Dockerfile line, comments and blanks left out."""
    lines = []
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            lines.append((instruction.upper(), rest.strip()))
    return lines


def parse_pgcast(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """Parse ``pgcast ARGS`` with the real CLI; return the command path. Raises on anything
    click refuses (unknown command, unknown option, missing required value)."""
    assert argv[0] == "pgcast", argv
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    command: click.Command = main
    ctx = click.Context(main, info_name="pgcast")
    args = argv[1:]
    path = ["pgcast"]
    while isinstance(command, click.Group):
        assert args, f"{' '.join(path)} needs a subcommand"
        sub = command.get_command(ctx, args[0])
        assert sub is not None, f"{' '.join(path)} has no command {args[0]!r}"
        path.append(args[0])
        ctx = click.Context(sub, info_name=args[0], parent=ctx)
        command, args = sub, args[1:]
    command.make_context(path[-1], list(args), parent=ctx.parent)
    return " ".join(path)


def shell_commands(script: str) -> list[list[str]]:
    """The commands of a ``sh -c`` script made of ``&&``-joined simple commands."""
    commands = []
    for part in script.split("&&"):
        words = shlex.split(part)
        if words and words[0] == "exec":
            words = words[1:]
        commands.append(words)
    return commands


def test_services_ports_healthchecks_and_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "pgcast"}
    pg, app = services["postgres"], services["pgcast"]
    assert pg["image"].startswith("postgres:")
    assert "wal_level=logical" in pg["command"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    schema = next(v for v in pg["volumes"] if "docker-entrypoint-initdb.d" in v)
    assert (ROOT / schema.split(":")[0]).is_file()
    assert app["build"] == "."
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "4000:4000" in app["ports"]
    assert "/health" in " ".join(app["healthcheck"]["test"])
    env = app["environment"]
    assert "@postgres:5432/" in env["PGCAST_DATABASE_URL"]
    assert env["PGCAST_JWT_SECRET"].startswith("${PGCAST_JWT_SECRET:-")
    default = env["PGCAST_JWT_SECRET"].removeprefix("${PGCAST_JWT_SECRET:-").removesuffix("}")
    example = (ROOT / ".env.example").read_text()
    assert f"PGCAST_JWT_SECRET={default}" in example


def test_the_demo_schema_is_the_table_the_image_captures() -> None:
    sql = (ROOT / "docker" / "demo-schema.sql").read_text()
    assert "CREATE TABLE IF NOT EXISTS public.messages" in sql
    cmd = next(rest for instruction, rest in dockerfile() if instruction == "CMD")
    assert "pgcast tables add public.messages" in cmd


def test_dockerfile_copies_what_exists_and_runs_real_cli_commands(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = dockerfile()
    assert lines[0][0] == "FROM" and lines[0][1].startswith("python:3.11")
    for instruction, rest in lines:
        if instruction == "COPY":
            *sources, _dest = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    cmd = next(rest for instruction, rest in lines if instruction == "CMD")
    argv = yaml.safe_load(cmd)  # JSON array form
    assert argv[:2] == ["sh", "-c"]
    env = {k: str(v) for k, v in compose["services"]["pgcast"]["environment"].items()}
    env["PGCAST_JWT_SECRET"] = "x" * 40
    commands = shell_commands(argv[2])
    paths = [parse_pgcast(words, env, monkeypatch) for words in commands]
    assert paths == ["pgcast migrate", "pgcast tables add", "pgcast serve"]
    assert "--demo-page" in commands[2]  # `docker compose up`, then open the page


def test_the_parser_refuses_what_the_cli_does_not_have(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"PGCAST_DATABASE_URL": "postgresql://x@y/z"}
    with pytest.raises(AssertionError):
        parse_pgcast(["pgcast", "nosuch"], env, monkeypatch)
    with pytest.raises(click.NoSuchOption):
        parse_pgcast(["pgcast", "serve", "--no-such-option"], env, monkeypatch)
    monkeypatch.delenv("PGCAST_DATABASE_URL")
    with pytest.raises(click.MissingParameter):
        parse_pgcast(["pgcast", "migrate"], {}, monkeypatch)
