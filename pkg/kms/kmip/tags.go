package kmip

import "github.com/atrest/atrest/pkg/kms/kmip/ttlv"

// The tags and enumeration values atrest uses (KMIP 1.4 specification,
// sections 9.1.3.1 and 9.1.3.2).
const (
	tagAttribute            ttlv.Tag = 0x420008
	tagAttributeName        ttlv.Tag = 0x42000A
	tagAttributeValue       ttlv.Tag = 0x42000B
	tagBatchCount           ttlv.Tag = 0x42000D
	tagBatchErrorContinue   ttlv.Tag = 0x42000E
	tagBatchItem            ttlv.Tag = 0x42000F
	tagBlockCipherMode      ttlv.Tag = 0x420011
	tagCryptoAlgorithm      ttlv.Tag = 0x420028
	tagCryptoLength         ttlv.Tag = 0x42002A
	tagCryptoParameters     ttlv.Tag = 0x42002B
	tagCryptoUsageMask      ttlv.Tag = 0x42002C
	tagIVCounterNonce       ttlv.Tag = 0x42003D
	tagMaximumResponseSize  ttlv.Tag = 0x420050
	tagName                 ttlv.Tag = 0x420053
	tagNameType             ttlv.Tag = 0x420054
	tagNameValue            ttlv.Tag = 0x420055
	tagObjectType           ttlv.Tag = 0x420057
	tagOperation            ttlv.Tag = 0x42005C
	tagProtocolVersion      ttlv.Tag = 0x420069
	tagProtocolVersionMajor ttlv.Tag = 0x42006A
	tagProtocolVersionMinor ttlv.Tag = 0x42006B
	tagRequestHeader        ttlv.Tag = 0x420077
	tagRequestMessage       ttlv.Tag = 0x420078
	tagRequestPayload       ttlv.Tag = 0x420079
	tagResponseHeader       ttlv.Tag = 0x42007A
	tagResponseMessage      ttlv.Tag = 0x42007B
	tagResponsePayload      ttlv.Tag = 0x42007C
	tagResultMessage        ttlv.Tag = 0x42007D
	tagResultReason         ttlv.Tag = 0x42007E
	tagResultStatus         ttlv.Tag = 0x42007F
	tagRevocationReason     ttlv.Tag = 0x420081
	tagRevocationReasonCode ttlv.Tag = 0x420082
	tagState                ttlv.Tag = 0x42008D
	tagTemplateAttribute    ttlv.Tag = 0x420091
	tagUniqueBatchItemID    ttlv.Tag = 0x420093
	tagUniqueIdentifier     ttlv.Tag = 0x420094
	tagData                 ttlv.Tag = 0x4200C2
	tagTagLength            ttlv.Tag = 0x4200CE
	tagAEADAdditionalData   ttlv.Tag = 0x4200FE
	tagAEADTag              ttlv.Tag = 0x4200FF
)

// Operations.
const (
	opCreate           = 0x01
	opLocate           = 0x08
	opGetAttributes    = 0x0B
	opActivate         = 0x12
	opRevoke           = 0x13
	opDestroy          = 0x14
	opDiscoverVersions = 0x1E
	opEncrypt          = 0x1F
	opDecrypt          = 0x20
)

var opNames = map[uint32]string{
	opCreate: "Create", opLocate: "Locate", opGetAttributes: "GetAttributes", opActivate: "Activate",
	opRevoke: "Revoke", opDestroy: "Destroy", opDiscoverVersions: "DiscoverVersions", opEncrypt: "Encrypt", opDecrypt: "Decrypt",
}

// Enumeration values.
const (
	objectSymmetricKey = 0x02
	algorithmAES       = 0x03
	modeGCM            = 0x09
	usageEncrypt       = 0x04
	usageDecrypt       = 0x08
	nameTypeText       = 0x01
	revokeCessation    = 0x06
	batchContinue      = 0x01
	resultSuccess      = 0x00
)

// Result reasons (section 9.1.3.2.29) that atrest branches on.
const (
	reasonItemNotFound     = 0x01
	reasonResponseTooLarge = 0x02
	reasonAuthentication   = 0x03
	reasonInvalidMessage   = 0x04
	reasonOperationNotSupp = 0x05
	reasonInvalidField     = 0x07
	reasonCryptoFailure    = 0x0A
	reasonIllegalOperation = 0x0B
	reasonPermissionDenied = 0x0C
	reasonObjectArchived   = 0x0D
	reasonGeneralFailure   = 0x100
)

// State is a managed object's lifecycle state (section 3.22).
type State uint32

// The states.
const (
	StatePreActive            State = 1
	StateActive               State = 2
	StateDeactivated          State = 3
	StateCompromised          State = 4
	StateDestroyed            State = 5
	StateDestroyedCompromised State = 6
)

func (s State) String() string {
	switch s {
	case StatePreActive:
		return "Pre-Active"
	case StateActive:
		return "Active"
	case StateDeactivated:
		return "Deactivated"
	case StateCompromised:
		return "Compromised"
	case StateDestroyed:
		return "Destroyed"
	case StateDestroyedCompromised:
		return "Destroyed Compromised"
	}
	return "state " + string(rune('0'+s%10))
}
