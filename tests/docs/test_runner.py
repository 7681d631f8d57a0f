"""The doc test's own parts (sans-IO): fences, expected-output patterns, links."""

from pathlib import Path

from tests.docs.runner import blocks, link_problems, normalized, pattern, slug, substitute


def test_fences_and_their_options():
    text = "x\n```sh background port=8080\nbroker run\n```\n\n```text output\nok\n```\n"
    first, second = blocks(text)
    assert (first.language, first.options, first.text) == (
        "sh",
        {"background": "", "port": "8080"},
        "broker run\n",
    )
    assert first.runnable
    assert not first.is_output
    assert second.is_output
    assert not second.runnable


def test_expected_output_patterns():
    expected = pattern('{"id":"3k9x0q-1","topic":"jobs"}')
    assert expected.fullmatch('{"id":"p0m2rt-1a.k3j9xq-7","topic":"jobs"}')
    assert not expected.fullmatch('{"id":"p0m2rt-1","topic":"other"}')
    loose = pattern("a ...\nb")
    assert loose.fullmatch("a anything here\n more lines\nb")
    assert not loose.fullmatch("a x\nc")
    assert pattern("a\nb").fullmatch(normalized("a  \r\nb "))  # trailing blanks do not count


def test_ports_are_replaced_whole():
    assert substitute("127.0.0.1:8080 and 18080 and 80801", {8080: 41234}) == (
        "127.0.0.1:41234 and 18080 and 80801"
    )


def test_links_must_name_files_and_headings_inside(tmp_path: Path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Peer links\n")
    doc = tmp_path / "docs" / "a.md"
    doc.write_text(
        "[ok](other.md#peer-links) [web](https://example.org) [self](#title)\n"
        "[gone](missing.md) [out](../../etc/passwd) [anchor](other.md#nope)\n"
        "`[code](not-a-link.md)`\n# Title\n"
    )
    assert link_problems(doc, tmp_path) == [
        "missing.md: no such file",
        "../../etc/passwd: outside the repository",
        "other.md#nope: no heading #nope in other.md",
    ]
    assert slug("Cluster on Redis") == "cluster-on-redis"
    assert slug("`broker token`: minting") == "broker-token-minting"
