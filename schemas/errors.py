"""Turning pydantic errors into messages a user can act on."""

from pydantic import ValidationError


def format_validation_error(source: str, err: ValidationError) -> str:
    """One line per problem, each naming the dotted field path, all problems at once."""
    lines = [f"{source}: {err.error_count()} problem(s)"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"  - {field}: {e['msg']}")
    return "\n".join(lines)
