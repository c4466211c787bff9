package volume

import (
	"encoding/binary"
	"fmt"
	"io"
)

// A file system's own idea of where it ends, read from its superblock:
// encryption in place gives the device's last EncryptReduce bytes to the
// header and the shift, so nothing of the file system may lie there.
// Three families are read (others are refused, ErrFSUnsupported):
//
//   - ext2/3/4: s_blocks_count (and its high half with 64bit) times the
//     block size; shrunk offline with resize2fs.
//   - btrfs on one device: the device item's total_bytes in the primary
//     superblock (what `btrfs filesystem resize` sets; btrfs allocates no
//     device extent beyond it and writes no superblock mirror there);
//     shrunk while mounted. A btrfs of several devices is refused: the
//     others would stay plaintext.
//   - XFS with its log inside the data device and no realtime device:
//     sb_dblocks times the block size. XFS cannot shrink; the room comes
//     from a device grown without growing the file system.
type fsExtent struct {
	size  uint64 // bytes from the device's start
	block uint64 // the file system's block (btrfs: sector) size
}

// readFSExtent reads the extent of the file system of type typ (as
// signature.Probe names it) on r.
func readFSExtent(r io.ReaderAt, typ string) (*fsExtent, error) {
	switch typ {
	case "ext2", "ext3", "ext4":
		sb := make([]byte, 1024)
		if _, err := r.ReadAt(sb, 1024); err != nil {
			return nil, fmt.Errorf("read the superblock: %w", err)
		}
		bs := uint64(1024) << binary.LittleEndian.Uint32(sb[0x18:])
		blocks := uint64(binary.LittleEndian.Uint32(sb[0x4:]))
		if binary.LittleEndian.Uint32(sb[0x60:])&0x80 != 0 { // INCOMPAT_64BIT
			blocks |= uint64(binary.LittleEndian.Uint32(sb[0x150:])) << 32
		}
		return &fsExtent{size: blocks * bs, block: bs}, nil
	case "btrfs":
		sb := make([]byte, 0x100)
		if _, err := r.ReadAt(sb, 0x10000); err != nil {
			return nil, fmt.Errorf("read the superblock: %w", err)
		}
		if n := binary.LittleEndian.Uint64(sb[0x88:]); n != 1 {
			return nil, fmt.Errorf("%w; found a btrfs of %d devices (the others would stay plaintext)", ErrFSUnsupported, n)
		}
		return &fsExtent{size: binary.LittleEndian.Uint64(sb[0xd1:]), block: uint64(binary.LittleEndian.Uint32(sb[0x90:]))}, nil
	case "xfs":
		sb := make([]byte, 64)
		if _, err := r.ReadAt(sb, 0); err != nil {
			return nil, fmt.Errorf("read the superblock: %w", err)
		}
		if binary.BigEndian.Uint64(sb[48:]) == 0 { // sb_logstart: 0 is an external log
			return nil, fmt.Errorf("%w; found an XFS with an external log device (it would stay plaintext)", ErrFSUnsupported)
		}
		if binary.BigEndian.Uint64(sb[16:]) != 0 { // sb_rblocks
			return nil, fmt.Errorf("%w; found an XFS with a realtime device (it would stay plaintext)", ErrFSUnsupported)
		}
		bs := uint64(binary.BigEndian.Uint32(sb[4:]))
		return &fsExtent{size: binary.BigEndian.Uint64(sb[8:]) * bs, block: bs}, nil
	}
	return nil, nil
}

// makeRoom is the command that lets a file system of type typ on device,
// fsSize bytes on a devSize-byte device, end EncryptReduce bytes before
// the device does (target bytes at most, a multiple of the block size).
func makeRoom(typ, device string, fsSize, devSize, target uint64) string {
	switch typ {
	case "btrfs":
		return fmt.Sprintf("shrink it first, mounted (btrfs shrinks online), then unmount it: mount %s /mnt && btrfs filesystem resize %dK /mnt && umount /mnt", device, target/1024)
	case "xfs":
		return fmt.Sprintf("XFS cannot shrink: grow the device to at least %d bytes without growing the file system (for example lvextend -L +%dM; never xfs_growfs), or copy the data onto a new atrest volume", fsSize+EncryptReduce, (fsSize+EncryptReduce-devSize+(1<<20)-1)>>20)
	}
	return fmt.Sprintf("shrink it first, unmounted: e2fsck -f %s && resize2fs %s %dK (resize2fs -P %s prints the least it can shrink to)", device, device, target/1024, device)
}
