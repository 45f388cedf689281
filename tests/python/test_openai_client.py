"""The official `openai` Python client pointed at a running Tollgate.

Run by tests/openai_python_client.rs, which starts the gateway in front of
the fake upstream (src/fake_upstream.rs) and sets TOLLGATE_BASE_URL (for
example http://127.0.0.1:PORT/v1) and TOLLGATE_API_KEY. The fake answers
"Hello from fake" with 20 prompt and 10 completion tokens.
"""

import os

import openai
import pytest

BASE_URL = os.environ.get("TOLLGATE_BASE_URL")
API_KEY = os.environ.get("TOLLGATE_API_KEY")

pytestmark = pytest.mark.skipif(
    not BASE_URL or not API_KEY,
    reason="TOLLGATE_BASE_URL and TOLLGATE_API_KEY must point at a running gateway",
)

CHAT_MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello"}]
ANSWER = "Hello from fake"


@pytest.fixture
def client():
    # No retries: the error tests must see the first failure, quickly.
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=30)


def test_a_chat_completion_returns_the_answer_and_its_usage(client):
    completion = client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES)
    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 20
    assert completion.usage.completion_tokens == 10
    assert completion.usage.total_tokens == 30


def test_a_raw_chat_response_carries_the_tollgate_request_id(client):
    raw = client.chat.completions.with_raw_response.create(model=CHAT_MODEL, messages=MESSAGES)
    assert raw.status_code == 200
    request_id = raw.headers.get("x-tollgate-request-id")
    assert request_id, f"no x-tollgate-request-id in {dict(raw.headers)}"
    assert raw.parse().choices[0].message.content == ANSWER


def test_a_streamed_chat_without_usage_requested_has_no_usage_chunk(client):
    stream = client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, stream=True)
    chunks = list(stream)
    content = "".join(
        chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices
    )
    assert content == ANSWER
    assert all(chunk.usage is None for chunk in chunks), "the client did not ask for usage"
    assert any(chunk.choices and chunk.choices[0].finish_reason == "stop" for chunk in chunks)


def test_a_streamed_chat_with_usage_requested_ends_with_a_usage_chunk(client):
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = "".join(
        chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices
    )
    assert content == ANSWER
    with_usage = [chunk for chunk in chunks if chunk.usage is not None]
    assert len(with_usage) == 1
    assert with_usage[0] is chunks[-1], "the usage chunk comes last"
    assert with_usage[0].choices == []
    assert with_usage[0].usage.prompt_tokens == 20
    assert with_usage[0].usage.completion_tokens == 10


def test_embeddings_return_one_vector(client):
    response = client.embeddings.create(model="text-embedding-3-small", input="embed me")
    assert len(response.data) == 1
    assert len(response.data[0].embedding) == 3
    assert response.data[0].embedding == pytest.approx([0.1, 0.2, 0.3])
    assert response.usage.prompt_tokens == 8


def test_an_image_generation_returns_one_image(client):
    response = client.images.generate(model="dall-e-3", prompt="a cat", n=1, size="1024x1024")
    assert response.data is not None
    assert len(response.data) == 1
    assert response.data[0].url == "https://example.invalid/image.png"


def test_a_responses_call_returns_the_output_text_and_its_usage(client):
    response = client.responses.create(model=CHAT_MODEL, input="Say hello")
    assert response.output_text == ANSWER
    assert response.output[0].content[0].text == ANSWER
    assert response.usage is not None
    assert response.usage.input_tokens == 20
    assert response.usage.output_tokens == 10


def test_an_upstream_rate_limit_raises_rate_limit_error(client):
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(
            model=CHAT_MODEL, messages=MESSAGES, extra_body={"fake": "rate_limit"}
        )
    assert raised.value.status_code == 429
    assert "Rate limit" in raised.value.message
    assert raised.value.response.headers.get("x-tollgate-request-id")


def test_a_bad_key_raises_authentication_error():
    client = openai.OpenAI(
        base_url=BASE_URL, api_key="tg-not-a-real-key", max_retries=0, timeout=30
    )
    with pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES)
    assert raised.value.status_code == 401
