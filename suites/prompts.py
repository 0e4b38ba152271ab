"""Prompt text and its rendering to token ids.

With a chat template: ChatML-style messages, system prompt "You are a helpful assistant." (the SDLM
evaluation convention, specs/sdlm.md section 5), `add_generation_prompt=True`. Without one: a plain
text rendering for base models (no system prompt; the suite decides the text).
The templates below are hashed into each suite's `prompt_hash`, so editing one changes the hash.
"""

from __future__ import annotations

SYSTEM_PROMPT = "You are a helpful assistant."

# OpenCompass 0-shot \boxed{} prompt, as used for SDLM's GSM8K and MATH-500 numbers.
MATH_TEMPLATE = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."

# OpenCompass humaneval_gen (openai_sample_evals) instruction.
HUMANEVAL_TEMPLATE = (
    "Read the following function signature and docstring, and fully implement the function described. "
    "Your response should only contain the code for this function.\n{prompt}"
)

# The task text and its tests, as in the MBPP paper's prompt; the fence request keeps extraction simple.
MBPP_TEMPLATE = (
    "You are an expert Python programmer, and here is your task: {text} "
    "Your code should pass these tests:\n\n{tests}\n\n"
    "Write the complete solution in a single ```python code block."
)


def chat_messages(user: str, system: str | None = SYSTEM_PROMPT) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_ids(messages: list[dict[str, str]], tokenizer, plain_text: str) -> list[int]:
    """Token ids of the prompt: the chat template when the tokenizer has one, else `plain_text`."""
    if has_chat_template(tokenizer):
        # Render to text, then encode without adding specials: the template already holds them, and
        # transformers 5 returns a dict from apply_chat_template(tokenize=True).
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tokenizer.encode(text, add_special_tokens=False))
    return list(tokenizer.encode(plain_text))


def plain_from_messages(messages: list[dict[str, str]]) -> str:
    """Plain rendering: the non-system turns, blank-line separated, ending in a newline."""
    return "\n\n".join(m["content"] for m in messages if m["role"] != "system") + "\n"
