//! LLM inference on candle: model loading, tokenization, batched greedy decoding
