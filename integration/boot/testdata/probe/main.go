// Command probe runs in the boot tier's guest as a Program check: a
// static Go binary that reports what a daemon would see of the network
// and reads a file it is given.
package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	ifs, err := net.Interfaces()
	if err != nil {
		fmt.Println("interfaces:", err)
		os.Exit(1)
	}
	for _, i := range ifs {
		fmt.Printf("interface %s up=%v\n", i.Name, i.Flags&net.FlagUp != 0)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("listen on loopback:", err)
		os.Exit(1)
	}
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		fmt.Println("dial loopback:", err)
		os.Exit(1)
	}
	c.Close()
	l.Close()
	fmt.Println("loopback connect ok")
	for _, f := range os.Args[1:] {
		b, err := os.ReadFile(f)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Printf("%s: %s", f, b)
	}
}
