"""Find the lookup table for a model on a device: the tables shipped in the package first,
then the ones `autoslim-hw profile` wrote under ./luts."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..nn.supernet import Supernet
from .table import LatencyTable, model_key

SHIPPED = Path(__file__).parent / "data"


def table_dirs() -> list[Path]:
    return [SHIPPED, Path("luts")]


def default_table_path(supernet: Supernet, device: str, runtime: str) -> Path:
    """Where `autoslim-hw profile` writes a model's table by default."""
    spec = supernet.spec
    return Path("luts") / f"{spec.arch}-{spec.input_size}-{device}-{runtime}.json"


def find_table(supernet: Supernet, device: str, runtime: str) -> Path | None:
    """A table for this device and runtime that was profiled for this exact model
    (architecture, widths and input size), or None. For this host's devices (cpu-1core, ...)
    only a table measured on this host's CPU model will do."""
    return next((path for path, table in _tables_for(supernet, device, runtime) if not table.other_host()), None)


def tables_of_other_hosts(supernet: Supernet, device: str, runtime: str) -> list[tuple[Path, str]]:
    """(path, CPU model) of tables that would fit but were measured on another CPU: worth naming
    when none fits, since --allow-mismatch can use them."""
    return [(path, table.metadata.get("cpu_model", "?")) for path, table in _tables_for(supernet, device, runtime)
            if table.other_host()]


def _tables_for(supernet: Supernet, device: str, runtime: str):
    key = model_key(supernet)
    for folder in table_dirs():
        if not folder.is_dir():
            continue
        for path in sorted([*folder.glob("*.json"), *folder.glob("*.json.gz")]):
            try:
                table = LatencyTable.load(path)
            except UserError:
                continue  # not a table (or a broken one): it cannot be the one asked for
            md = table.metadata
            if (md.get("device", {}).get("name"), md.get("runtime")) == (device, runtime) and \
                    key in [m.get("key") for m in md.get("models", [])]:
                yield path, table


def check_table_model(table: LatencyTable, supernet: Supernet, path: Path, profile_hint: str,
                      allow_mismatch: bool = False) -> None:
    """A table profiled for another model (or input size) predicts from the wrong layers."""
    key = model_key(supernet)
    have = [m.get("key") for m in table.metadata.get("models", [])]
    if key not in have and not allow_mismatch:
        raise UserError(f"lookup table {path} was profiled for {', '.join(have) or 'no model'}, not for {key}; "
                        f"build one with `{profile_hint}` or pass --allow-mismatch")


def table_model(table: LatencyTable, path: Path) -> Supernet:
    """The supernet a table was profiled for, from the spec it records."""
    from ..models import build_from_spec
    from ..nn.supernet import ModelSpec

    specs = [m["spec"] for m in table.metadata.get("models", []) if m.get("spec")]
    if len(specs) != 1:
        keys = ", ".join(m.get("key", "?") for m in table.metadata.get("models", [])) or "none"
        raise UserError(f"{path} was profiled for {len(specs)} models ({keys}); say which with --model "
                        "(and --input-size, --width-mult) or --checkpoint")
    return build_from_spec(ModelSpec.from_dict(specs[0]))


def table_path(lut) -> Path:
    """The table a user named with --lut: a file, or a table shipped in the package by its file
    name (as `autoslim-hw lut list` prints it)."""
    path = Path(lut)
    if path.is_file():
        return path
    shipped = {p.name: p for p in shipped_tables()}
    if path.name == str(lut) and str(lut) in shipped:
        return shipped[str(lut)]
    if path.is_dir():
        raise UserError(f"lookup table {lut} is a directory; pass a table file (.json or .json.gz)")
    raise UserError(f"lookup table {lut} does not exist; pass a file, or a shipped table's name from "
                    "`autoslim-hw lut list`, or build one with `autoslim-hw profile`")


def shipped_tables() -> list[Path]:
    """The tables shipped in the package, by file name."""
    return sorted([*SHIPPED.glob("*.json"), *SHIPPED.glob("*.json.gz")]) if SHIPPED.is_dir() else []
