"""Markdown tables read back as cells, whatever their padding (the writers pad columns to a width)."""


def markdown_rows(text: str) -> list:
    """Every table line of `text` as its stripped cells; separator lines (---) left out."""
    return [[cell.strip() for cell in line.strip()[1:-1].split("|")] for line in text.splitlines()
            if line.lstrip().startswith("|") and not set(line.strip()) <= set("|-: ")]
