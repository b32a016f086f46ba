"""lit_cifar.cpu: naming the CPU kind that decides which settings are fastest (docs/benchmarks.md has one table per kind)."""

import pytest

from lit_cifar import cpu


@pytest.mark.parametrize(
    ("vendor", "family", "model", "core"),
    [
        ("AuthenticAMD", 25, 1, "Zen 3"),  # the project's AVX2-only EPYC
        ("AuthenticAMD", 25, 17, "Zen 4"),
        ("AuthenticAMD", 26, 2, "Zen 5"),
        ("GenuineIntel", 6, 143, "Sapphire Rapids"),
        ("GenuineIntel", 6, 85, None),  # a Skylake-SP: not a kind the project has measured
        ("HygonGenuine", 24, 1, None),
    ],
)
def test_core_name_by_vendor_family_and_model(vendor, family, model, core):
    assert cpu.core_name(vendor, family, model) == core


def test_cpu_kind_names_family_model_and_core_from_cpuinfo(monkeypatch):
    fields = {"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "17", "model name": "AMD EPYC"}
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: fields)
    assert cpu.cpu_kind() == "AMD EPYC (family 25 model 17: Zen 4)"
    fields["model"] = "200"  # a model the table does not hold: the numbers alone
    assert cpu.cpu_kind() == "AMD EPYC (family 25 model 200)"
    del fields["cpu family"]  # no numbers (another OS, an emulator): the model name alone
    assert cpu.cpu_kind() == "AMD EPYC"


def test_cpuinfo_reads_the_first_processor(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n\n"
                       "processor\t: 1\nmodel name\t: another\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path, *a, **k))
    assert cpu.cpu_model() == "AMD EPYC" and cpu.cpu_kind() == "AMD EPYC (family 26 model 2: Zen 5)"
