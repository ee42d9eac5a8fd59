"""Options dataclasses as the one declaration of a setting: generated flags, defaults, round trips."""

from __future__ import annotations

import dataclasses

import pytest

from fish_speech.cli import build_parser
from fish_speech.options import identity_fields, option_defaults, options_from_args, options_to_argv
from fish_speech.text2semantic.options import LORA_CONFIG_NAMES, TrainOptions

REQUIRED = ["--data", "p1", "--data", "p2", "--base-weight", "base", "--output", "out"]


def _train_args(argv: list[str]):
    return build_parser().parse_args(["train", *argv])


def test_train_flags_are_generated_from_train_options():
    parser_defaults = _train_args(REQUIRED)
    for f in dataclasses.fields(TrainOptions):
        assert hasattr(parser_defaults, f.name), f"no --{f.name.replace('_', '-')} flag"
    opts = options_from_args(TrainOptions, parser_defaults)
    assert opts == TrainOptions(data=["p1", "p2"], base_weight="base", output="out")
    assert option_defaults(TrainOptions)["max_steps"] == opts.max_steps == 10000


def test_help_shows_the_declared_help_and_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "optimizer steps (default 10000)" in text
    assert "--weight-decay" in text and "AdamW weight decay (default 0)" in text
    assert "AdamW learning rate (default 0.0001)" in text
    assert "optimisation (defaults: upstream's fine-tuning config):" in text


def test_required_and_typed_flags():
    with pytest.raises(SystemExit):
        _train_args(["--data", "p"])  # --base-weight and --output are required
    with pytest.raises(SystemExit):
        _train_args([*REQUIRED, "--max-steps", "many"])
    args = _train_args([*REQUIRED, "--lora-r", "16", "--learning-rate", "3e-4", "--resume"])
    assert (args.lora_r, args.learning_rate, args.resume, args.lora_alpha) == (16, 3e-4, True, None)


def test_options_to_argv_round_trips():
    opts = TrainOptions(
        data=["a", "b"],
        base_weight="w",
        output="o",
        lora_r=4,
        learning_rate=2.5e-5,
        val_every=7,
        resume=True,
        devices="2",
    )
    assert options_from_args(TrainOptions, _train_args(options_to_argv(TrainOptions, opts))) == opts
    assert "--overwrite" not in options_to_argv(TrainOptions, opts)  # False flags are left out


def test_identity_fields_leave_out_only_paths_and_run_control():
    names = set(identity_fields(TrainOptions))
    assert {"max_steps", "learning_rate", "lora_config", "seed", "weight_decay", "devices"} <= names
    assert not names & {"data", "base_weight", "output", "resume", "overwrite", "num_workers", "log_every"}


def test_lora_config_names_match_the_configs():
    from fish_speech.text2semantic.lora import LORA_CONFIGS

    assert tuple(LORA_CONFIGS) == LORA_CONFIG_NAMES


def test_normalize_flags_are_generated_from_settings():
    from fish_speech.dataset.normalize import Settings

    args = build_parser().parse_args(["normalize", "in", "out", "--peak", "-3"])
    assert options_from_args(Settings, args) == Settings(peak=-3.0)
    assert (args.loudness, args.block_size) == (Settings().loudness, Settings().block_size)


def test_codec_rates_are_the_codec_config():
    from fish_speech.codec.model import CodecConfig
    from fish_speech.codec.options import SAMPLE_RATE, SAMPLES_PER_FRAME

    assert (CodecConfig.s1_mini().sample_rate, CodecConfig.s1_mini().frame_length) == (
        SAMPLE_RATE,
        SAMPLES_PER_FRAME,
    )
    assert (CodecConfig.tiny().sample_rate, CodecConfig.tiny().frame_length) == (
        SAMPLE_RATE,
        SAMPLES_PER_FRAME,
    )


def test_storage_registry_is_the_one_scheme_list():
    from fish_speech.errors import UserError
    from fish_speech.storage.fetch import open_store
    from fish_speech.storage.uri import STORES, is_object_store, parse_uri

    assert set(STORES) == {"gs", "s3"}
    assert is_object_store("s3://bucket/x") and is_object_store("GS://bucket")
    assert not is_object_store("/mnt/fish-speech/checkpoints") and not is_object_store("hf://org/name")
    assert not is_object_store("")
    for scheme in STORES:
        module, _, name = STORES[scheme].partition(":")
        assert type(open_store(parse_uri(f"{scheme}://bucket/prefix"))).__name__ == name
    with pytest.raises(UserError, match="not an object store"):
        open_store(parse_uri("hf://org/name"))


def test_extract_vq_flags_are_generated_from_extract_options():
    from fish_speech.codec.options import ExtractOptions

    args = build_parser().parse_args(["extract-vq", "data", "--output-dir", "codes", "--num-shards", "3"])
    opts = options_from_args(ExtractOptions, args)
    assert opts == ExtractOptions(output_dir="codes", num_shards=3)
    assert opts.batch_size == ExtractOptions().batch_size == option_defaults(ExtractOptions)["batch_size"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["extract-vq", "data", "--precision", "float16"])  # choices are declared


def test_pick_fields_takes_only_settings():
    from fish_speech.options import pick_fields

    got = pick_fields(
        TrainOptions, {"max_steps": 5, "protos": "x", "gpu_type": "a100", "lora_config": "r_8_alpha_16"}
    )
    assert got == {"max_steps": 5, "lora_config": "r_8_alpha_16"}
