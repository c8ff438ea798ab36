import json

from ivkit.core.machine import machine_info


def test_machine_info_is_json_ready_and_names_the_versions():
    info = machine_info()
    json.dumps(info)
    assert info["cores"] >= 1 and info["threads"] >= 1
    assert {"torch", "transformers", "ivkit", "cpu", "ram_gib"} <= set(info)
