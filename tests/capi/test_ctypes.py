#!/usr/bin/python3
"""Python binds the C API (include/gpt.h) with ctypes alone (Debian's python3, no
extra packages): load a checkpoint, tokenize, generate greedily, and get the same
text as `gpt generate --greedy`.

Environment: GPT_LIBRARY (libgptcpp.so), GPT_BINARY (the gpt command)."""
import ctypes
import os
import subprocess
import tempfile
import unittest

LIB = ctypes.CDLL(os.environ["GPT_LIBRARY"])
GPT = os.environ["GPT_BINARY"]

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n") * 40


class ModelParams(ctypes.Structure):
    _fields_ = [("threads", ctypes.c_int), ("trainable", ctypes.c_int), ("quantize", ctypes.c_char_p),
                ("kv_cache", ctypes.c_int)]


class GenerateParams(ctypes.Structure):
    _fields_ = [("max_tokens", ctypes.c_int32), ("greedy", ctypes.c_int), ("temperature", ctypes.c_float),
                ("top_k", ctypes.c_int32), ("top_p", ctypes.c_float), ("min_p", ctypes.c_float),
                ("repeat_penalty", ctypes.c_float), ("repeat_last_n", ctypes.c_int32),
                ("presence_penalty", ctypes.c_float), ("frequency_penalty", ctypes.c_float),
                ("seed", ctypes.c_uint64), ("stop", ctypes.POINTER(ctypes.c_char_p)), ("n_stop", ctypes.c_size_t)]


TEXT_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_char), ctypes.c_size_t, ctypes.c_void_p)

LIB.gpt_last_error.restype = ctypes.c_char_p
LIB.gpt_status_name.restype = ctypes.c_char_p
LIB.gpt_version.restype = ctypes.c_char_p
LIB.gpt_model_default_params.restype = ModelParams
LIB.gpt_generate_default_params.restype = GenerateParams
LIB.gpt_model_load.argtypes = [ctypes.c_char_p, ctypes.POINTER(ModelParams), ctypes.POINTER(ctypes.c_void_p)]
LIB.gpt_model_free.argtypes = [ctypes.c_void_p]
LIB.gpt_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int32),
                             ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
LIB.gpt_detokenize.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t, ctypes.c_char_p,
                               ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
LIB.gpt_generate.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(GenerateParams), TEXT_CALLBACK,
                             ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]

GPT_OK, GPT_ERR_NOT_FOUND, GPT_ERR_BUFFER_TOO_SMALL = 0, 2, 5


class GptError(Exception):
    pass


def check(status):
    if status != GPT_OK:
        raise GptError(f"{LIB.gpt_status_name(status).decode()}: {LIB.gpt_last_error().decode()}")


def tokenize(model, text):
    data = text.encode()
    needed = ctypes.c_size_t()
    status = LIB.gpt_tokenize(model, data, len(data), None, 0, ctypes.byref(needed))  # ask the size first
    if status != GPT_ERR_BUFFER_TOO_SMALL:
        check(status)
    ids = (ctypes.c_int32 * needed.value)()
    n = ctypes.c_size_t()
    check(LIB.gpt_tokenize(model, data, len(data), ids, needed.value, ctypes.byref(n)))
    return list(ids[:n.value])


def generate(model, prompt, params, on_text=None):
    callback = TEXT_CALLBACK(lambda piece, size, _: (on_text(ctypes.string_at(piece, size)) if on_text else 0) or 0)
    buffer = ctypes.create_string_buffer(1 << 16)
    n = ctypes.c_size_t()
    check(LIB.gpt_generate(model, prompt.encode(), ctypes.byref(params), callback, None, buffer, len(buffer),
                           ctypes.byref(n)))
    return buffer.raw[:n.value].decode()


class CTypes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        data = os.path.join(cls.tmp.name, "input.txt")
        with open(data, "w") as f:
            f.write(TEXT)
        cls.checkpoint = os.path.join(cls.tmp.name, "model")
        subprocess.run([GPT, "train", "--data", data, "--out", cls.checkpoint, "--n-layer", "2", "--n-head", "2",
                        "--n-embd", "32", "--block-size", "64", "--batch-size", "8", "--max-iters", "60",
                        "--lr", "3e-3", "--eval-interval", "60", "--eval-iters", "2", "--threads", "2", "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
        params = LIB.gpt_model_default_params()
        params.threads = 2
        cls.model = ctypes.c_void_p()
        check(LIB.gpt_model_load(cls.checkpoint.encode(), ctypes.byref(params), ctypes.byref(cls.model)))

    @classmethod
    def tearDownClass(cls):
        LIB.gpt_model_free(cls.model)
        cls.tmp.cleanup()

    def test_version(self):
        self.assertIn(b"commit", LIB.gpt_version())

    def test_tokenize_round_trip_and_same_ids_as_the_command(self):
        text = "First Citizen:\nSpeak, speak."
        ids = tokenize(self.model, text)
        encoded = subprocess.run([GPT, "tokenize", "encode", "--tokenizer", self.checkpoint], input=text.encode(),
                                 check=True, capture_output=True).stdout.decode().split()
        self.assertEqual(ids, [int(x) for x in encoded])
        array = (ctypes.c_int32 * len(ids))(*ids)
        out = ctypes.create_string_buffer(256)
        n = ctypes.c_size_t()
        check(LIB.gpt_detokenize(self.model, array, len(ids), out, len(out), ctypes.byref(n)))
        self.assertEqual(out.raw[:n.value].decode(), text)

    def test_greedy_generation_is_the_commands_text(self):
        prompt = "First Citizen:\n"
        params = LIB.gpt_generate_default_params()
        params.greedy = 1
        params.max_tokens = 80
        pieces = []
        text = generate(self.model, prompt, params, on_text=lambda b: pieces.append(b) and 0)
        expected = subprocess.run([GPT, "generate", "--model", self.checkpoint, "--prompt", prompt, "--greedy",
                                   "--max-tokens", "80", "--threads", "2"],
                                  check=True, capture_output=True).stdout.decode()
        # The command prints the prompt, the text and a newline.
        self.assertEqual(prompt + text + "\n", expected)
        self.assertEqual(b"".join(pieces).decode(), text)
        self.assertGreater(len(text), 40)

    def test_sampled_generation_is_the_commands_text_for_a_seed(self):
        prompt = "All:\n"
        params = LIB.gpt_generate_default_params()
        params.max_tokens = 50
        params.temperature = 0.8
        params.top_k = 10
        params.seed = 42
        text = generate(self.model, prompt, params)
        expected = subprocess.run([GPT, "generate", "--model", self.checkpoint, "--prompt", prompt, "--max-tokens",
                                   "50", "--temperature", "0.8", "--top-k", "10", "--seed", "42", "--threads", "2"],
                                  check=True, capture_output=True).stdout.decode()
        self.assertEqual(prompt + text + "\n", expected)

    def test_errors_are_codes_and_messages(self):
        handle = ctypes.c_void_p()
        status = LIB.gpt_model_load(b"/no/such/model", None, ctypes.byref(handle))
        self.assertEqual(status, GPT_ERR_NOT_FOUND)
        self.assertIn(b"/no/such/model", LIB.gpt_last_error())
        self.assertIsNone(handle.value)
        with self.assertRaisesRegex(GptError, "GPT_ERR_BAD_INPUT: .*outside the vocabulary"):
            array = (ctypes.c_int32 * 2)(1, 1 << 20)
            check(LIB.gpt_detokenize(self.model, array, 2, ctypes.create_string_buffer(8), 8,
                                     ctypes.byref(ctypes.c_size_t())))
        with self.assertRaisesRegex(GptError, "GPT_ERR_BAD_INPUT"):  # a character the model never saw
            tokenize(self.model, "\u4e2d")


if __name__ == "__main__":
    unittest.main(verbosity=2)
