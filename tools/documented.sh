# Sourced by the scripts that run documented commands. `documented FILE COMMAND` fails unless
# COMMAND appears verbatim in FILE, then runs it with eval in the calling shell (so `export` and
# `cd` in a documented step carry over to the next, as they would for a user).
documented() {
  if ! grep -qF -- "$2" "$1"; then
    echo "not in $1 as written: $2" >&2
    return 1
  fi
  echo "== ($1) $2"
  eval "$2"
}

# `documented_block FILE LANG HEADING`: the first ```LANG block after the line HEADING in FILE.
documented_block() {
  awk -v heading="$3" -v fence="\`\`\`$2" '
    $0 == heading { found = 1; next }
    found && $0 == fence { inside = 1; next }
    inside && $0 == "```" { exit }
    inside { print }
  ' "$1"
}
