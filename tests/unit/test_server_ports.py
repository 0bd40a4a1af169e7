"""tests.conftest.server_ports: ports for the servers tests start, never ones the kernel may hand
to an outgoing connection meanwhile (the ephemeral range, less the reserved ports)."""

from __future__ import annotations

import pytest

from tests.conftest import SERVER_PORTS, _port_list, automatic_ports, server_ports


def test_the_reserved_ports_format_is_read() -> None:
    assert _port_list("2222,12379-12381\n") == {2222, 12379, 12380, 12381}
    assert _port_list("\n") == set()


def test_ports_are_distinct_free_and_never_chosen_by_the_kernel() -> None:
    ports = server_ports(4)
    automatic, reserved = automatic_ports()
    assert len(set(ports)) == 4 and all(port in SERVER_PORTS for port in ports)
    assert all(port not in automatic or port in reserved for port in ports)


def test_a_block_the_kernel_may_use_is_refused() -> None:
    automatic, reserved = automatic_ports()
    block = next((range(p, p + 8) for p in range(max(automatic.start, 1024), automatic.stop - 8, 8)
                  if not reserved & set(range(p, p + 8))), None)
    if block is None:
        pytest.skip("every block of the automatic range has a reserved port")
    with pytest.raises(pytest.fail.Exception, match="kept out of the kernel's automatic port choice"):
        server_ports(1, block)
