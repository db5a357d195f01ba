//! The judge worker: turns judge jobs into preferences
