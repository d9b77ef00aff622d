"""Alibaba Cloud Model Studio (DashScope), serving Qwen."""

from __future__ import annotations

from datetime import date

from .base import Provider, TermsRow

PROVIDER = Provider(
    name="qwen",
    hosts=("dashscope.aliyuncs.com", "dashscope-intl.aliyuncs.com"),
    aliases=("alibaba",),
    # Structured output is JSON mode, response_format json_object, on its compatible endpoint
    # (https://www.alibabacloud.com/help/en/model-studio/json-mode)
    structured_output="json_object",
    terms=TermsRow("conditional", "Alibaba Cloud Model Studio's terms and each Qwen model's license govern output "
                   "use; some Qwen licenses require attribution or restrict training other models.",
                   "https://www.alibabacloud.com/help/en/model-studio/", date(2026, 11, 28)),
)
