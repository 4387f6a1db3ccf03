//! FEEL (Friendly Enough Expression Language) with Zeebe semantics.
