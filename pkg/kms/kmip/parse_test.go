package kmip

import (
	"testing"

	"github.com/atrest/atrest/pkg/kms/kmip/ttlv"
)

// FuzzParse feeds hostile responses to the batch-item logic behind every
// operation: it may refuse them, never panic, and never returns a result
// count other than the request count.
func FuzzParse(f *testing.F) {
	ok := func(id byte) ttlv.Item {
		return ttlv.Struct(tagBatchItem, ttlv.Enum(tagOperation, opDecrypt), ttlv.Bytes(tagUniqueBatchItemID, []byte{0, 0, 0, id}),
			ttlv.Enum(tagResultStatus, resultSuccess), ttlv.Struct(tagResponsePayload, ttlv.Text(tagUniqueIdentifier, "1"), ttlv.Bytes(tagData, []byte("pt"))))
	}
	f.Add(ttlv.Struct(tagResponseMessage, ttlv.Struct(tagResponseHeader), ok(1), ok(0)).Encode(nil))
	f.Add(ttlv.Struct(tagResponseMessage, ok(0), ok(0)).Encode(nil))
	reqs := []request{{op: opDecrypt}, {op: opDecrypt}}
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, err := ttlv.Decode(b)
		if err != nil {
			return
		}
		res, err := parse(resp, reqs)
		if err == nil && len(res) != len(reqs) {
			t.Fatalf("%d results for %d requests", len(res), len(reqs))
		}
		for i := range res {
			if res[i].payload == nil {
				t.Fatalf("result %d without a payload structure", i)
			}
			if !res[i].ok() {
				_ = resultError(res[i].op, &res[i]).Error()
			} else {
				_, _ = res[i].payload.BytesOf(tagData)
			}
		}
	})
}
