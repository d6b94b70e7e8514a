"""The ``--config`` option every command that runs against a deployment shares, and reading it.

Base layer (see ``tests/unit/test_imports.py``): the command modules of every package
(:mod:`pipeline.commands`, :mod:`pipeline.ops`, :mod:`pipeline.governance.commands`) import
it; it imports no stage, so none of them has to import another command module for it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.errors import ConfigError

if TYPE_CHECKING:
    from schemas.config import PipelineConfig

CONFIG_ENV = "VEILSTREAM_CONFIG"
"""The environment variable ``--config`` defaults from (shown in ``--help``)."""


def config_arg(p: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` (default ``$VEILSTREAM_CONFIG``) to a subcommand's parser."""
    p.add_argument("--config", type=Path, default=os.environ.get(CONFIG_ENV),
                   help=f"pipeline config YAML (default ${CONFIG_ENV}, or .veilstream/config.yaml "
                        "written by `veilstream up`)")


def load_cli_config(args: argparse.Namespace) -> PipelineConfig:
    """The config ``--config`` names, else ``$VEILSTREAM_STATE_DIR/config.yaml`` (default
    ``.veilstream/``) written by ``veilstream up``; none is a one-line :class:`ConfigError`."""
    # Lazy: jsonschema and the schema files load only for commands that read a config.
    from schemas.config import load_config

    path = args.config
    if path is None:
        default = Path(os.environ.get("VEILSTREAM_STATE_DIR", ".veilstream")) / "config.yaml"
        if default.is_file():
            path = default
        else:
            raise ConfigError(f"no config: pass --config FILE, set ${CONFIG_ENV}, or run `veilstream up` first")
    return load_config(path)
