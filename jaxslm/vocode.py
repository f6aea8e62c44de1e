"""`python -m jaxslm.vocode`: speech units (JSONL) -> wav files, with a unit HiFi-GAN in JAX.

  python -m jaxslm.vocode --units continuations.jsonl --vocoder hifigan_mhubert_25hz/ --out wavs/
  python -m jaxslm.vocode --units units.jsonl --vocoder DIR --durations file --out resynth/
  python -m jaxslm.vocode --units continuations.jsonl --vocoder toy --out wavs/   # toy tones

Reads the lines that `python -m jaxslm.generate` writes (`units`, `units_str`) and those of
`python -m jaxslm.tokenize_audio` (`file_name`, `units`, `duration`). --vocoder is a folder with
a textless/fairseq unit HiFi-GAN ("CodeGenerator": a JSON config and its weights, .safetensors
or a PyTorch state dict read with weights_only), e.g. textless's mHuBERT-25Hz vocoder that
slamkit's config/vocoder/vocoder_hubert_25.yaml names; or `toy`, the toy language's tone
renderer. Write ./toy to use a folder named toy.

Durations (--durations): auto (default, as slamkit) uses the vocoder's duration predictor when
it has one, else one frame per unit; file repeats each unit by the line's `duration` (to
resynthesize tokenize_audio output; a line without one is an error); once is one frame per
unit; predict requires the predictor.

Each wav is named after the line (`file_name` with suffix .wav, or `<prompt>-<sample>.wav`)
and written whole or not at all; OUT/manifest.jsonl lists the wavs done. Running the command
again vocodes only the lines not in the manifest, so an interrupted run resumes; delete a
wav's manifest line (or the folder) to redo it. Lines that cannot be vocoded (no units, ids
outside the vocoder's range, a bad line) are skipped and listed in OUT/errors.jsonl.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxslm.cli_help import HelpFormatter
from jaxslm.errors import JaxslmError


def _parser() -> argparse.ArgumentParser:
    from jaxslm.speech.vocode_lines import DURATION_MODES
    from jaxslm.speech.vocoder import DEFAULT_BATCH_FRAMES

    parser = argparse.ArgumentParser(
        prog="python -m jaxslm.vocode",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--units", required=True, type=Path, help="JSONL of unit lines")
    parser.add_argument(
        "--vocoder", required=True, help="textless/fairseq vocoder folder, or 'toy'"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder for the wavs")
    parser.add_argument(
        "--durations", choices=DURATION_MODES, default="auto", help="frames per unit (see above)"
    )
    parser.add_argument(
        "--speaker", default="0", help="speaker name (speakers.txt) or index; a name wins"
    )
    parser.add_argument(
        "--style", default="0", help="style name (styles.txt) or index; a name wins"
    )
    parser.add_argument(
        "--batch-frames",
        type=int,
        default=DEFAULT_BATCH_FRAMES,
        help="unit frames per vocoder batch",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from jaxslm.fsutil import prepare_output_folder
        from jaxslm.speech.vocode_lines import vocode_file
        from jaxslm.speech.vocoder import load_vocoder

        if args.batch_frames < 1:
            raise JaxslmError(f"--batch-frames {args.batch_frames}: give a positive count")
        if not args.units.is_file():
            raise JaxslmError(f"--units {args.units}: no such file")
        prepare_output_folder(args.out)
        counts = vocode_file(
            args.units,
            lambda: load_vocoder(args.vocoder, args.batch_frames),
            args.out,
            args.durations,
            args.speaker,
            args.style,
            not args.no_progress,
        )
    except JaxslmError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"{counts['written']} wav(s) written, {counts['skipped']} line(s) skipped, "
        f"{counts['done_before']} already done, {counts['lines']} line(s); output {args.out}"
    )
    return 0


if __name__ == "__main__":
    from jaxslm.backend import prepare_process

    prepare_process()
    sys.exit(main())
