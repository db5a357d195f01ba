//! The generation worker: turns generation jobs into answers
