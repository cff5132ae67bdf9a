"""`foresight-eval profiles`: the compatibility profiles, and what each one changes."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from foresight_eval.cli.common import print_json, stdout
from foresight_eval.profiles import load_profile, profile_names


def _settings_json(profile) -> list[dict]:
    return [{"setting": key, "default": default, "value": value, "changed": default != value}
            for key, default, value in profile.settings()]


@click.group("profiles", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON.")
@click.pass_context
def profiles_group(context: click.Context, as_json: bool) -> None:
    """List the compatibility profiles (`score --profile NAME`): each reproduces another tool's convention."""
    if context.invoked_subcommand is not None:
        return
    profiles = [load_profile(name) for name in profile_names()]
    if as_json:
        print_json({profile.name: {**profile.record(), "settings": _settings_json(profile)} for profile in profiles})
        return
    table = Table()
    for column in ("profile", "metrics", "changes (default -> profile)"):
        table.add_column(column)
    for profile in profiles:
        lines = [f"{key}: {default!r} -> {value!r}" for key, default, value in profile.settings() if default != value]
        fixed = ", ".join(f"{key}={value!r}" for key, default, value in profile.settings() if default == value)
        lines += [f"fixed at the default: {fixed}"] if fixed else []
        table.add_row(escape(profile.name), ", ".join(profile.metrics), escape("\n".join(lines)))
    stdout.print(table)
    stdout.print("`foresight-eval profiles show NAME` for the details; a profile file works too (--profile FILE).")


@profiles_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
def profiles_show(name: str, as_json: bool) -> None:
    """Show profile NAME (or a profile file): its reference, metrics, and every setting it changes."""
    profile = load_profile(name)
    if as_json:
        print_json({**profile.record(), "settings": _settings_json(profile)})
        return
    stdout.print(f"[bold]{escape(profile.name)}[/]: {escape(profile.description)}", soft_wrap=True)
    stdout.print(f"reference: {escape(profile.reference)}", soft_wrap=True)
    stdout.print(f"file: {escape(profile.path)} (sha256 {profile.sha256})", soft_wrap=True)
    stdout.print(f"metrics: {', '.join(profile.metrics)}")
    table = Table(title="settings it fixes", title_justify="left")
    for column in ("setting", "default", "profile"):
        table.add_column(column)
    for key, default, value in profile.settings():
        table.add_row(escape(key), escape(repr(default)), escape(repr(value) if default != value else "(the default)"))
    stdout.print(table)
