#!/usr/bin/env bash
# Run an example and compare its standard output with the expected text.
set -u
out=$("$1") || { echo "example exited with status $?"; exit 1; }
if [ "$out" != "$(cat "$2")" ]; then
  echo "unexpected output:"; echo "$out"; echo "expected:"; cat "$2"; exit 1
fi
