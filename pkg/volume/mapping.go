package volume

import (
	"strings"

	"github.com/atrest/atrest/pkg/dmcrypt"
)

// MappingUUID returns the LUKS2 UUID of the volume mapped as name, read
// from the mapping's dm UUID; "" when there is no such LUKS2 mapping (or
// no device-mapper).
func (m *Manager) MappingUUID(name string) string {
	st, err := dmcrypt.Inspect(name)
	if err != nil {
		return ""
	}
	return luksUUIDOf(st.UUID)
}

// luksUUIDOf turns a dm UUID, CRYPT-LUKS2-<uuid without dashes>-<name>,
// into the LUKS2 UUID the audit trail and status name volumes by.
func luksUUIDOf(dmUUID string) string {
	parts := strings.SplitN(dmUUID, "-", 4)
	if len(parts) != 4 || parts[0] != "CRYPT" || parts[1] != "LUKS2" || len(parts[2]) != 32 {
		return ""
	}
	h := parts[2]
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Ref is how commands name v to the user: its name, else its device path
// (which every command accepts, image files included), so a hint is never
// "run: atrest header backup ".
func (v *Volume) Ref() string {
	if v.Name != "" {
		return v.Name
	}
	return v.Device
}
