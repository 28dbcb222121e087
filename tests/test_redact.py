from opsbot.redact import MASK, redact, redact_value


def test_redacts_common_secret_shapes() -> None:
    text = (
        "password=hunter2 token: abc123 Authorization: Bearer eyJabc.def.ghi "
        "xoxb-1234567890-abcdefghij sk-ABCDEFGHIJKLMNOPQRST https://user:pw@host/x AKIAABCDEFGHIJKLMNOP"
    )
    out = redact(text)
    for secret in (
        "hunter2",
        "abc123",
        "xoxb-1234567890",
        "sk-ABCDEFGH",
        ":pw@",
        "AKIAABCDEFGHIJKLMNOP",
    ):
        assert secret not in out
    assert out.count(MASK) >= 6


def test_keeps_ordinary_text_and_masks_secret_fields() -> None:
    assert redact("restart checkout in shop") == "restart checkout in shop"
    assert redact_value({"api_key": "x1", "name": "checkout", "nested": [{"password": "p"}]}) == {
        "api_key": MASK,
        "name": "checkout",
        "nested": [{"password": MASK}],
    }


def test_counts_named_like_tokens_stay() -> None:
    assert redact_value({"prompt_tokens": 120, "token": "s3cr3t"}) == {
        "prompt_tokens": 120,
        "token": MASK,
    }
