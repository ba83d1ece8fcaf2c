"""The key=value command lines of data.generate, data.convert, data.convert.verify and data.export."""

from __future__ import annotations

TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


def parse_bool(key: str, text: str) -> bool:
    """true/false (1/0, yes/no); a ValueError naming the key for anything else."""
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise ValueError(f"{key} must be true or false, got {text!r}")


def key_values(items: list[str], known: tuple[str, ...] | list[str], usage: str) -> dict[str, str]:
    """['k=v', ...] -> {k: v} for known keys; a ValueError quoting the bad item and the usage otherwise."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in known:
            raise ValueError(f"bad argument {item!r}; {usage}")
        out[key] = text
    return out
