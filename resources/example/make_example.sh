#!/usr/bin/env bash
# Regenerates the bundled example (already committed; you do not need to run this).
# Speech is synthesized with espeak-ng (Debian package `espeak-ng`) and encoded with ffmpeg, so the
# example is ours to ship and exercises two container formats.
#
# "welcome meeting.flac" is a dialogue of three voices: Alice (en-us, female variant f3), Bob
# (British RP, male variant m3) and Carol (en-us, variant steph). ../speakers/ holds an enrollment
# table naming Alice and Bob from other sentences, so `make run` names them and leaves Carol
# unnamed. The voices were picked with resemblyzer (bench/speakers.py's scoring): Alice's and Bob's
# profiles score about 0.64 against each other and Carol's speech about 0.63 against either,
# far below the 0.845 naming threshold, while each person's own dialogue turns score about 0.95.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
alice=(-v en-us+f3 -p 60 -s 150)
bob=(-v en-gb-x-rp+m3 -p 35 -s 140)
carol=(-v en-us+steph -p 40 -s 150)

turns=(
  alice "Welcome to the weekly planning meeting. Today we will review the budget and the release schedule."
  bob "Thanks, Alice. The new server arrived on Monday, and testing starts next week."
  carol "I can help with the testing. I will write the plan for the load tests by Thursday."
  alice "Good. Bob, do we still expect to finish in March?"
  bob "Yes. If the tests go well, we finish in March."
  carol "Then I will book the demo for the first week of April."
)
ffmpeg -v error -y -f lavfi -i anullsrc=r=22050:cl=mono -t 0.6 -c:a pcm_s16le "$tmp/pause.wav"
: > "$tmp/list.txt"
for ((i = 0; i < ${#turns[@]}; i += 2)); do
  voice=${turns[i]}[@]
  espeak-ng "${!voice}" -w "$tmp/turn$i.wav" "${turns[i + 1]}"
  printf "file '%s'\nfile '%s'\n" "$tmp/turn$i.wav" "$tmp/pause.wav" >> "$tmp/list.txt"
done
ffmpeg -v error -y -f concat -safe 0 -i "$tmp/list.txt" -ar 16000 -ac 1 -fflags +bitexact -map_metadata -1 "welcome meeting.flac"

# Bob's status update (his voice again: the example names him in both recordings).
espeak-ng "${bob[@]}" -w "$tmp/update.wav" \
  "The new server arrived on Monday. Testing starts next week, and we expect to finish in March."
ffmpeg -v error -y -i "$tmp/update.wav" -ar 22050 -ac 1 -c:a libvorbis -q:a 4 -fflags +bitexact -map_metadata -1 status_update.ogg

# Enrollment clips: other sentences by Alice and Bob (see ../speakers/profiles.tsv).
mkdir -p ../speakers
espeak-ng "${alice[@]}" -w "$tmp/alice.wav" \
  "Hello, my name is Alice. I lead the planning meetings, and I read this so that the system learns my voice."
espeak-ng "${bob[@]}" -w "$tmp/bob.wav" \
  "Hello, I am Bob. I look after the servers, and this short recording is my voice profile."
ffmpeg -v error -y -i "$tmp/alice.wav" -ar 16000 -ac 1 -fflags +bitexact -map_metadata -1 ../speakers/alice.flac
ffmpeg -v error -y -i "$tmp/bob.wav" -ar 16000 -ac 1 -fflags +bitexact -map_metadata -1 ../speakers/bob.flac
printf 'name\taudio\tstart\tend\nAlice\talice.flac\t\t\nBob\tbob.flac\t\t\n' > ../speakers/profiles.tsv
