package luks2

import "testing"

// BenchmarkOpenPlatformKeyslot measures opening the PBKDF2-SHA512/1000
// platform keyslot of an in-memory device: the CPU part of an unlock.
func BenchmarkOpenPlatformKeyslot(b *testing.B) {
	dev, h, _ := formatted(b, FormatOptions{})
	p := pass(b, "platform")
	b.ResetTimer()
	for range b.N {
		vk, err := h.OpenKeyslot(dev, 0, p)
		if err != nil {
			b.Fatal(err)
		}
		vk.Wipe()
	}
}
