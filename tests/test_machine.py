"""What a result was measured on (mobilevit/utils/machine.py): the int8 dot-product instructions of the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from mobilevit.utils.machine import int8_dot_product_flags


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 avx512_vnni", ["avx512_vnni"]),  # Zen 4, Ice Lake on
        ("flags\t\t: fpu sse2 avx2 fma avx_vnni amx_int8", ["avx_vnni", "amx_int8"]),
        ("flags\t\t: fpu sse2 avx2 fma", []),  # Zen 3: AVX2 without VNNI
        ("Features\t: fp asimd asimddp i8mm", ["asimddp", "i8mm"]),  # Arm: sdot / smmla
    ],
)
def test_int8_dot_product_flags_read_the_cpus_flags(line: str, expected: list[str], tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\n{line}\n\nprocessor\t: 1\n{line}\n")
    assert int8_dot_product_flags(str(cpuinfo)) == expected
    assert int8_dot_product_flags(str(tmp_path / "missing")) == []
