"""The entries of a Debian changelog (`changelog.Debian.gz`), shared by the collectors.

An entry is a `  * ` line with its more deeply indented continuation lines, joined by spaces;
sub-bullets and the maintainer's sign-off end it. Callers clean the text their own way.
"""
import re


def changelog_items(text):
    items, current = [], None
    for line in text.splitlines():
        if re.match(r"^  [*] ", line):
            if current:
                items.append(current)
            current = [line[4:]]
        elif current is not None and re.match(r"^ {4,}\S", line):
            current.append(line.strip())
        else:
            if current:
                items.append(current)
            current = None
    if current:
        items.append(current)
    return [" ".join(item) for item in items]
