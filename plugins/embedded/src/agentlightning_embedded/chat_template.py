"""A ChatML chat template with Qwen2.5's tool-calling layout, written for this project.

Tools are listed in the system message inside ``<tools></tools>``; an assistant tool call is rendered as
``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``; tool results go back in a user turn as
``<tool_response>`` blocks. The model server uses it for models whose tokenizer has no template of its
own, and the tiny test model (:mod:`agentlightning_testing.tiny_model`) ships it.
"""

from __future__ import annotations

__all__ = ["CHATML_TOOLS_TEMPLATE", "DEFAULT_SYSTEM_PROMPT"]

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

CHATML_TOOLS_TEMPLATE = r"""
{%- macro render_text(content) -%}
    {%- if content is none -%}
    {%- elif content is string -%}{{- content -}}
    {%- else -%}{%- for part in content -%}{%- if part.type == 'text' -%}{{- part.text -}}{%- endif -%}{%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- if messages and messages[0].role == 'system' -%}
    {%- set system_text = render_text(messages[0].content) -%}
    {%- set turns = messages[1:] -%}
{%- else -%}
    {%- set system_text = 'DEFAULT_SYSTEM_PROMPT' -%}
    {%- set turns = messages -%}
{%- endif -%}
{{- '<|im_start|>system\n' + system_text -}}
{%- if tools -%}
    {{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' -}}
    {{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' -}}
    {%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments ' -}}
    {{- 'within <tool_call></tool_call> XML tags:\n<tool_call>\n' -}}
    {{- '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' -}}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- for message in turns -%}
    {%- if message.role == 'tool' -%}
        {%- if loop.first or loop.previtem.role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
        {{- '\n<tool_response>\n' + render_text(message.content) + '\n</tool_response>' -}}
        {%- if loop.last or loop.nextitem.role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
    {%- elif message.role == 'assistant' and message.tool_calls -%}
        {{- '<|im_start|>assistant' -}}
        {%- set text = render_text(message.content) -%}
        {%- if text -%}{{- '\n' + text -}}{%- endif -%}
        {%- for call in message.tool_calls -%}
            {%- set function = call.function if call.function is defined else call -%}
            {%- if function.arguments is string -%}{%- set arguments = function.arguments -%}
            {%- else -%}{%- set arguments = function.arguments | tojson -%}{%- endif -%}
            {{- '\n<tool_call>\n{"name": "' + function.name + '", "arguments": ' + arguments + '}\n</tool_call>' -}}
        {%- endfor -%}
        {{- '<|im_end|>\n' -}}
    {%- else -%}
        {{- '<|im_start|>' + message.role + '\n' + render_text(message.content) + '<|im_end|>\n' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
""".strip().replace("DEFAULT_SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT)
