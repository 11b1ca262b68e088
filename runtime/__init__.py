"""MAQ runtime: the tensor format, the C kernels (cffi), GGUF loading, the model, sampling, chat.

Must import and run without torch.
"""
