"""One model, one experiment: every spelling of a preset's model resolves to that preset."""
import json

from replication.models import GENERIC, PRESETS, canonical_name, resolve_preset


def test_hub_id_in_any_case_is_the_preset():
    assert resolve_preset("meta-llama/Llama-3.1-8B-Instruct") is PRESETS["llama-3.1-8b-instruct"]
    assert resolve_preset("META-LLAMA/llama-3.1-8b-instruct").counterpart == "llama-3.1-8b"
    assert canonical_name("meta-llama/Llama-3.1-8B-Instruct") == "llama-3.1-8b-instruct"
    assert canonical_name("llama-3.1-8b-instruct") == "llama-3.1-8b-instruct"


def test_a_local_folder_of_a_preset_model_gets_its_preset_and_loads_from_the_folder(tmp_path):
    by_record = tmp_path / "anything"
    by_record.mkdir()
    (by_record / "config.json").write_text(json.dumps({"_name_or_path": "Qwen/Qwen2.5-7B"}))
    p = resolve_preset(str(by_record))
    assert p.name == "qwen2.5-7b" and p.chat_format == "qa" and p.hub_id == str(by_record)
    by_name = tmp_path / "Llama-3.1-8B"
    by_name.mkdir()
    assert resolve_preset(str(by_name)).counterpart == "llama-3.1-8b-instruct"
    assert canonical_name(str(by_name)) == str(by_name)   # results of a folder stay under its own name


def test_unknown_models_get_generic_settings_that_say_so(tmp_path):
    p = resolve_preset("some-org/some-model")
    assert p.description == GENERIC and p.counterpart is None
    other = tmp_path / "mystery"
    other.mkdir()
    assert resolve_preset(str(other)).description == GENERIC
