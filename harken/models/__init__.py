"""Models: what differs between architectures (`families`), the bundle every stage uses
(`audio_lm`), loading and saving (`loading`), toy models built offline (`toy`), and the
Qwen2-Audio-7B architecture the benchmark builds without weights (`config7b`).
"""
