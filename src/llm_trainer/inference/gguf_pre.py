"""Which of llama.cpp's pre-tokenizers (``tokenizer.ggml.pre``) a BPE tokenizer needs, found
as llama.cpp's ``convert_hf_to_gguf.py`` finds it (``get_vocab_base_pre``): the tokenizer
encodes a fixed text (``CHECK_TEXT``: spaces, newlines, tabs, emoji, digits runs, Khmer,
Chinese, Cyrillic, quotes and English contractions, where pre-tokenizers differ) and the
SHA-256 of the ids' Python ``str`` (``check_hash``) is looked up among the hashes of the
tokenizers llama.cpp was made to reproduce (``KNOWN``). A match is what the converter would
write; no match is what it refuses ("BPE pre-tokenizer was not recognized").

The hashes hash ids, so they name one model family's tokenizer (its vocabulary and its
pre-tokenizer), not a split rule: the rule is guessed from nothing else. ``KNOWN`` holds the
converter's entries (at llama.cpp commit 0024aa74) for the byte-level BPE tokenizers of the
Llama, Qwen and GPT-2 shaped families ``--format hf`` and GGUF export write, and of the small
models people start from; the ref is the model the converter hashed.
"""

from __future__ import annotations

import hashlib

CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n"
    "\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f (multiple emojis concatenated) "
    "\u2705 \U0001f999\U0001f999 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "\u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785"
    "\U0001f601 ?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= "
    "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a"
    "\u0438 ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? "
    "'M not sure I'll make it, 'D you like some tea? We'Ve a'lL")

# chkhsh -> tokenizer.ggml.pre (# the model the converter hashed)
KNOWN = {
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # gpt2
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",  # ruGPT3XL
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5+
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3-Emb.
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM(2)
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral Nemo
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
    "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166": "olmo",
    "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085": "phi-2",
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": "gpt-4o",
}


def check_hash(tokenizer) -> str:
    """The converter's ``chkhsh`` for ``tokenizer`` (a ``tokenizers.Tokenizer``): it encodes
    with transformers' ``tokenizer.encode``, special tokens added (the post-processor's BOS of
    a Llama 3 tokenizer is part of its hash), which for a fast tokenizer is the library's
    ``encode`` with ``add_special_tokens``, and without the truncation or padding a
    tokenizer.json may carry (transformers leaves them off unless asked)."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    ids = copy.encode(CHECK_TEXT, add_special_tokens=True).ids
    return hashlib.sha256(str(ids).encode()).hexdigest()
