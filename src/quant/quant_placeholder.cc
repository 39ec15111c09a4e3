// Placeholder until the quantizer library lands.
