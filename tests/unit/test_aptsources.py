from toolkit.bake.aptsources import _parse_deb822, _parse_one_line, host_mirrors


def test_deb822_and_one_line_formats():
    deb822 = _parse_deb822(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n"
    )
    one = _parse_one_line("deb [arch=amd64 signed-by=/k.gpg] http://other.example/debian trixie main contrib\n")
    m = host_mirrors("bookworm", deb822 + one)
    assert m.main == "http://mirror.example/debian"
    assert m.security == "http://mirror.example/debian-security"
    assert host_mirrors("trixie", deb822 + one).main == "http://other.example/debian"


def test_this_host_has_a_mirror():
    assert host_mirrors("bookworm").main.startswith("http")
