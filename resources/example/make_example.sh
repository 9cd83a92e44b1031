#!/usr/bin/env bash
# Regenerates the bundled example recordings (already committed; you do not need to run this).
# Speech is synthesized with espeak-ng (Debian package `espeak-ng`) and encoded with ffmpeg, so the
# example is ours to ship and exercises two container formats.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
espeak-ng -v en-us -s 150 -w "$tmp/welcome.wav" \
  "Welcome to the weekly planning meeting. Today we will review the budget and the release schedule."
espeak-ng -v en-gb -s 145 -w "$tmp/update.wav" \
  "The new server arrived on Monday. Testing starts next week, and we expect to finish in March."
ffmpeg -v error -y -i "$tmp/welcome.wav" -ar 16000 -ac 1 -fflags +bitexact -map_metadata -1 "welcome meeting.flac"
ffmpeg -v error -y -i "$tmp/update.wav" -ar 22050 -ac 1 -c:a libvorbis -q:a 4 -fflags +bitexact -map_metadata -1 status_update.ogg
