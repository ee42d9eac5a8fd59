#!/usr/bin/env bash
# Regenerate examples/demo-voice/: two synthetic speakers, 16 clips of 1-5 s with .lab transcripts,
# in mixed formats and rates (WAV 22.05 kHz and 44.1 kHz, FLAC, MP3, one stereo WAV).
#
# The result is committed; this script is only needed to change it. Requirements:
#   apt-get update && apt-get install -y espeak-ng sox ffmpeg libsox-fmt-mp3
# sox runs with -R (fixed random seed for noise and dither): reruns give identical bytes with the same
# espeak-ng / sox / lame versions.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/demo-voice}"
for tool in espeak-ng sox ffmpeg; do
  command -v "$tool" >/dev/null || { echo "make_demo_voice.sh: $tool not found (see the header)" >&2; exit 2; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Remove only what an earlier run made (never a whole folder someone pointed us at by mistake).
if [ -d "$out" ]; then
  find "$out" -mindepth 2 -maxdepth 2 -type f \( -name '*.wav' -o -name '*.flac' -o -name '*.mp3' -o -name '*.lab' \) -delete
  find "$out" -mindepth 1 -type d -empty -delete
fi
mkdir -p "$out"

# say SPEAKER NAME VOICE PITCH SPEED FORMAT TEXT
#   FORMAT: wav22k | wav44k | flac44k | flac16k | mp3 | stereo44k
say() {
  local speaker=$1 name=$2 voice=$3 pitch=$4 speed=$5 format=$6 text=$7
  local dir="$out/$speaker" raw="$tmp/$speaker-$name.wav"
  mkdir -p "$dir"
  espeak-ng -v "$voice" -p "$pitch" -s "$speed" -w "$raw" "$text"
  # trim leading/trailing silence, leave 80 ms each side, add faint noise so no sample is exact zero
  local clean="$tmp/$speaker-$name-clean.wav"
  sox -R "$raw" "$clean" silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse pad 0.08 0.08
  local noise="$tmp/$speaker-$name-noise.wav"
  sox -R "$clean" "$noise" synth whitenoise vol 0.002
  local mixed="$tmp/$speaker-$name-mixed.wav"
  sox -R -m "$clean" "$noise" "$mixed" norm -3
  case "$format" in
    wav22k) sox -R "$mixed" -b 16 -r 22050 "$dir/$name.wav" ;;
    wav44k) sox -R "$mixed" -b 16 -r 44100 "$dir/$name.wav" ;;
    flac44k) sox -R "$mixed" -b 16 -r 44100 "$dir/$name.flac" ;;
    flac16k) sox -R "$mixed" -b 16 -r 16000 "$dir/$name.flac" ;;
    mp3) ffmpeg -loglevel error -y -i "$mixed" -ar 44100 -ac 1 -codec:a libmp3lame -b:a 64k "$dir/$name.mp3" ;;
    stereo44k)
      # right channel: the same speech 6 dB lower and 5 ms later, like a second microphone
      sox -R "$mixed" "$tmp/right.wav" vol 0.5 delay 0.005 trim 0 "$(soxi -D "$mixed")"
      sox -R -M "$mixed" "$tmp/right.wav" -b 16 -r 44100 "$dir/$name.wav"
      ;;
    *) echo "unknown format $format" >&2; exit 2 ;;
  esac
  printf '%s\n' "$text" >"$dir/$name.lab"
}

# Speaker "anna": a higher, slower voice.
A=(anna en-us 70 150)
say "${A[@]:0:1}" a01 "${A[1]}" "${A[2]}" "${A[3]}" wav22k "Hello, this is a short test."
say "${A[@]:0:1}" a02 "${A[1]}" "${A[2]}" "${A[3]}" wav22k "The quick brown fox jumps over the lazy dog."
say "${A[@]:0:1}" a03 "${A[1]}" "${A[2]}" "${A[3]}" wav44k "Fine tuning needs only a few minutes of speech."
say "${A[@]:0:1}" a04 "${A[1]}" "${A[2]}" "${A[3]}" flac44k "Every clip has a transcript beside it."
say "${A[@]:0:1}" a05 "${A[1]}" "${A[2]}" "${A[3]}" mp3 "Good morning, how are you today?"
say "${A[@]:0:1}" a06 "${A[1]}" "${A[2]}" "${A[3]}" flac16k "Numbers like one, two and three are read aloud."
say "${A[@]:0:1}" a07 "${A[1]}" "${A[2]}" "${A[3]}" wav22k "Please close the window before you leave."
say "${A[@]:0:1}" a08 "${A[1]}" "${A[2]}" "${A[3]}" wav44k "It is raining again today."

# Speaker "ben": a lower, faster voice.
B=(ben en-gb 30 185)
say "${B[@]:0:1}" b01 "${B[1]}" "${B[2]}" "${B[3]}" wav22k "A demo voice keeps the tests quick."
say "${B[@]:0:1}" b02 "${B[1]}" "${B[2]}" "${B[3]}" wav44k "The train leaves at half past seven."
say "${B[@]:0:1}" b03 "${B[1]}" "${B[2]}" "${B[3]}" stereo44k "This recording was made with two microphones."
say "${B[@]:0:1}" b04 "${B[1]}" "${B[2]}" "${B[3]}" flac44k "Loudness is normalised before the codes are extracted."
say "${B[@]:0:1}" b05 "${B[1]}" "${B[2]}" "${B[3]}" mp3 "Thank you very much."
say "${B[@]:0:1}" b06 "${B[1]}" "${B[2]}" "${B[3]}" wav22k "Where did you put the keys?"
say "${B[@]:0:1}" b07 "${B[1]}" "${B[2]}" "${B[3]}" mp3 "The garden is full of flowers in spring."
say "${B[@]:0:1}" b08 "${B[1]}" "${B[2]}" "${B[3]}" flac16k "See you tomorrow at the old station."

# Check the promise of the README: 16 clips of 1-5 s, each with a transcript.
n=0
while IFS= read -r f; do
  d=$(soxi -D "$f")
  awk -v d="$d" -v f="$f" 'BEGIN { if (d < 1.0 || d > 5.0) { print f ": " d " s is outside 1-5 s" > "/dev/stderr"; exit 1 } }'
  [ -s "${f%.*}.lab" ] || { echo "$f: no transcript" >&2; exit 1; }
  n=$((n + 1))
done < <(find "$out" -type f \( -name '*.wav' -o -name '*.flac' -o -name '*.mp3' \) | sort)
[ "$n" -eq 16 ] || { echo "expected 16 clips, made $n" >&2; exit 1; }
du -sh "$out"
