"""The mechanism and the network: GAttA's equations (``mechanism``), the two-pass wrapper for any CNN
(``network``), what one forward exposes (``trace``), per-pass BatchNorm statistics (``pass_statistics``),
pass-1 prefix reuse (``prefix_reuse``) and the hook/mode context managers (``hooks``). Imports torch only."""
