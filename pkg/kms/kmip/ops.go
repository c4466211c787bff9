package kmip

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/atrest/atrest/pkg/kms/kmip/ttlv"
	"github.com/atrest/atrest/pkg/secret"
)

// GCM parameters: a 96-bit nonce chosen by atrest (the size GCM is
// specified for; pykmip-server would otherwise pick 128 bits) and the full
// 128-bit tag.
const (
	nonceLen = 12
	tagLen   = 16
)

// Object is what GetAttributes reports about a key object.
type Object struct {
	// UID is the server's Unique Identifier.
	UID string
	// Name is the object's Name attribute.
	Name string
	// State is its lifecycle state.
	State State
	// Initial is its Initial Date: atrest's key version (Unix seconds).
	Initial time.Time
}

func uidItem(uid string) ttlv.Item { return ttlv.Text(tagUniqueIdentifier, uid) }

func nameItem(name string) ttlv.Item {
	return ttlv.Struct(tagName, ttlv.Text(tagNameValue, name), ttlv.Enum(tagNameType, nameTypeText))
}

func attr(name string, value ttlv.Item) ttlv.Item {
	value.Tag = tagAttributeValue
	return ttlv.Struct(tagAttribute, ttlv.Text(tagAttributeName, name), value)
}

func gcmParams() ttlv.Item {
	return ttlv.Struct(tagCryptoParameters,
		ttlv.Enum(tagBlockCipherMode, modeGCM),
		ttlv.Enum(tagCryptoAlgorithm, algorithmAES),
		ttlv.Int32(tagTagLength, tagLen))
}

// first fails the whole call with the first item's error, for operations
// that send one item.
func first(res []result) error {
	if !res[0].ok() {
		return resultError(res[0].op, &res[0])
	}
	return nil
}

// DiscoverVersions asks which protocol versions the server speaks, newest
// first, as "major.minor".
func (cl *Client) DiscoverVersions(ctx context.Context) ([]string, error) {
	var out []string
	err := cl.do(ctx, "discover versions", []request{{op: opDiscoverVersions}}, func(res []result) error {
		if err := first(res); err != nil {
			return err
		}
		for _, v := range res[0].payload.All(tagProtocolVersion) {
			maj, err1 := v.IntOf(tagProtocolVersionMajor)
			min, err2 := v.IntOf(tagProtocolVersionMinor)
			if err1 != nil || err2 != nil {
				return &protocolError{"protocol version without major or minor"}
			}
			out = append(out, fmt.Sprintf("%d.%d", maj, min))
		}
		return nil
	})
	return out, err
}

// CreateKey creates an AES-256 key named name, usable for Encrypt and
// Decrypt, and activates it. KMIP allows both in one message (Activate
// naming the new object through the ID placeholder), but pykmip-server
// cannot parse an Activate without a Unique Identifier, so they are two
// messages (docs/kmip.md).
func (cl *Client) CreateKey(ctx context.Context, name string) (string, error) {
	uid, err := cl.Create(ctx, name)
	if err != nil {
		return "", err
	}
	return uid, cl.Activate(ctx, uid)
}

// Create creates an AES-256 key named name, usable for Encrypt and
// Decrypt, in the Pre-Active state.
func (cl *Client) Create(ctx context.Context, name string) (string, error) {
	tmpl := ttlv.Struct(tagTemplateAttribute,
		attr("Cryptographic Algorithm", ttlv.Enum(0, algorithmAES)),
		attr("Cryptographic Length", ttlv.Int32(0, 256)),
		attr("Cryptographic Usage Mask", ttlv.Int32(0, usageEncrypt|usageDecrypt)),
		attr("Name", nameItem(name)),
	)
	req := request{op: opCreate, payload: []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey), tmpl}}
	var uid string
	err := cl.do(ctx, "create", []request{req}, func(res []result) error {
		if err := first(res); err != nil {
			return err
		}
		var err error
		if uid, err = res[0].payload.TextOf(tagUniqueIdentifier); err != nil {
			return &protocolError{err.Error()}
		}
		return nil
	})
	return uid, err
}

// Locate returns the Unique Identifiers of the objects named name.
func (cl *Client) Locate(ctx context.Context, name string) ([]string, error) {
	var uids []string
	req := request{op: opLocate, payload: []ttlv.Item{attr("Name", nameItem(name))}}
	err := cl.do(ctx, "locate", []request{req}, func(res []result) error {
		if err := first(res); err != nil {
			return err
		}
		for _, u := range res[0].payload.All(tagUniqueIdentifier) {
			if u.Type != ttlv.TextString {
				return &protocolError{"unique identifier is not a text string"}
			}
			uids = append(uids, string(u.Bytes))
		}
		return nil
	})
	return uids, err
}

// GetAttributes reads the Name, State and Initial Date of each object,
// one batch item per object. An object that does not exist (any more) is
// a per-item ErrKeyNotFound.
func (cl *Client) GetAttributes(ctx context.Context, uids []string) ([]Object, []error, error) {
	reqs := make([]request, len(uids))
	for i, u := range uids {
		reqs[i] = request{op: opGetAttributes, payload: []ttlv.Item{uidItem(u),
			ttlv.Text(tagAttributeName, "Name"), ttlv.Text(tagAttributeName, "State"), ttlv.Text(tagAttributeName, "Initial Date")}}
	}
	objs, errs := make([]Object, len(uids)), make([]error, len(uids))
	err := cl.do(ctx, "get attributes", reqs, func(res []result) error {
		for i := range res {
			if !res[i].ok() {
				errs[i] = resultError(opGetAttributes, &res[i])
				continue
			}
			objs[i].UID = uids[i]
			for _, a := range res[i].payload.All(tagAttribute) {
				name, err := a.TextOf(tagAttributeName)
				v, ok := a.Find(tagAttributeValue)
				if err != nil || !ok {
					return &protocolError{"attribute without name or value"}
				}
				switch {
				case name == "State" && v.Type == ttlv.Enumeration:
					objs[i].State = State(v.Int)
				case name == "Initial Date" && v.Type == ttlv.DateTime:
					objs[i].Initial = time.Unix(v.Int, 0).UTC()
				case name == "Name" && v.Type == ttlv.Structure:
					objs[i].Name, _ = v.TextOf(tagNameValue)
				}
			}
		}
		return nil
	})
	return objs, errs, err
}

// sealed is one Encrypt result: nonce, ciphertext and tag.
type sealed []byte

// encrypt encrypts each plaintext under uid with AES-GCM, its additional
// authenticated data the matching aad. One message for the batch.
func (cl *Client) encrypt(ctx context.Context, uid string, pts []*secret.Key, aads []string) ([]sealed, []error, error) {
	reqs := make([]request, len(pts))
	nonces := make([][]byte, len(pts))
	for i, pt := range pts {
		nonces[i] = make([]byte, nonceLen)
		if _, err := rand.Read(nonces[i]); err != nil {
			return nil, nil, err
		}
		reqs[i] = request{op: opEncrypt, payload: []ttlv.Item{uidItem(uid), gcmParams(),
			ttlv.Bytes(tagData, pt.Bytes()), ttlv.Bytes(tagIVCounterNonce, nonces[i]), ttlv.Bytes(tagAEADAdditionalData, []byte(aads[i]))}}
	}
	out, errs := make([]sealed, len(pts)), make([]error, len(pts))
	err := cl.do(ctx, "encrypt", reqs, func(res []result) error {
		for i := range res {
			if !res[i].ok() {
				errs[i] = resultError(opEncrypt, &res[i])
				continue
			}
			ct, err1 := res[i].payload.BytesOf(tagData)
			tag, err2 := res[i].payload.BytesOf(tagAEADTag)
			if err1 != nil || err2 != nil || len(tag) != tagLen || len(ct) != pts[i].Len() {
				return &protocolError{"encrypt answer without data of the plaintext's length and a 16-byte tag"}
			}
			if iv, ok := res[i].payload.Find(tagIVCounterNonce); ok && string(iv.Bytes) != string(nonces[i]) {
				return &protocolError{"encrypt answer with another nonce than the one sent"}
			}
			s := make(sealed, 0, nonceLen+len(ct)+tagLen)
			s = append(append(append(s, nonces[i]...), ct...), tag...)
			out[i] = s
		}
		return nil
	})
	return out, errs, err
}

// decrypt decrypts each sealed blob under its uid with its aad. The
// plaintexts are copied from the response (locked memory, wiped after)
// straight into secret.Keys, which the caller wipes.
func (cl *Client) decrypt(ctx context.Context, uids []string, blobs []sealed, aads []string) ([]*secret.Key, []error, error) {
	reqs := make([]request, len(blobs))
	for i, b := range blobs {
		n := len(b) - nonceLen - tagLen
		reqs[i] = request{op: opDecrypt, payload: []ttlv.Item{uidItem(uids[i]), gcmParams(),
			ttlv.Bytes(tagData, b[nonceLen:nonceLen+n]), ttlv.Bytes(tagIVCounterNonce, b[:nonceLen]),
			ttlv.Bytes(tagAEADAdditionalData, []byte(aads[i])), ttlv.Bytes(tagAEADTag, b[nonceLen+n:])}}
	}
	out, errs := make([]*secret.Key, len(blobs)), make([]error, len(blobs))
	err := cl.do(ctx, "decrypt", reqs, func(res []result) error {
		for i := range res {
			if !res[i].ok() {
				errs[i] = resultError(opDecrypt, &res[i])
				continue
			}
			pt, err := res[i].payload.BytesOf(tagData)
			if err != nil || len(pt) == 0 {
				return &protocolError{"decrypt answer without data"}
			}
			k, err := secret.New(len(pt))
			if err != nil {
				return err
			}
			copy(k.Bytes(), pt)
			out[i] = k
		}
		return nil
	})
	if err != nil {
		for _, k := range out {
			k.Wipe()
		}
		return nil, nil, err
	}
	return out, errs, nil
}

// Revoke revokes an object (reason Cessation of Operation): it is
// Deactivated and no longer encrypts; whether it still decrypts is the
// server's choice (pykmip-server refuses).
func (cl *Client) Revoke(ctx context.Context, uid string) error {
	req := request{op: opRevoke, payload: []ttlv.Item{uidItem(uid),
		ttlv.Struct(tagRevocationReason, ttlv.Enum(tagRevocationReasonCode, revokeCessation))}}
	return cl.do(ctx, "revoke", []request{req}, first)
}

// Destroy destroys an object; the server refuses an Active one (revoke
// it first). Every secret wrapped with it is lost.
func (cl *Client) Destroy(ctx context.Context, uid string) error {
	return cl.do(ctx, "destroy", []request{{op: opDestroy, payload: []ttlv.Item{uidItem(uid)}}}, first)
}

// Activate activates a Pre-Active object.
func (cl *Client) Activate(ctx context.Context, uid string) error {
	return cl.do(ctx, "activate", []request{{op: opActivate, payload: []ttlv.Item{uidItem(uid)}}}, first)
}
