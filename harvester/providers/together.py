"""Together AI. Its batch API is OpenAI's Files + Batch API with two differences: the input file's
purpose is `batch-api`, and a file holds at most 100 MB (50,000 requests). The discount ("up to 50%")
holds for selected models only, so none is assumed: set quota.prices.batch_factor for yours
(https://docs.together.ai/docs/inference/batch/overview, read 2026-12-01). It serves open-weight
models: their own licences apply (no terms row)."""

from __future__ import annotations

from .base import Provider

PROVIDER = Provider(
    name="together",
    hosts=("api.together.xyz",),
    batch_file_purpose="batch-api",
    batch_max_requests=50_000,
    batch_max_bytes=100 * 1024 * 1024,
    # response_format json_schema (https://docs.together.ai/docs/json-mode); its logprobs are an integer
    # count with their own shape (https://docs.together.ai/docs/logprobs), not OpenAI's top_logprobs
    structured_output="json_schema",
)
