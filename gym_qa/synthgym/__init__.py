"""SynthGym: procedurally rendered gymnastics-like clips with a FineGym-style hierarchy."""
