"""Models: what differs between architectures (`families`), the bundle every stage uses
(`audio_lm`), loading and saving (`loading`), toy models built offline (`toy`), and the
full-size architectures of the published checkpoints, known without a download (`known`).
"""
