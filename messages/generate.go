package messages

//go:generate sh gen.sh
