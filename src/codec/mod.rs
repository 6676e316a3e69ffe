//! Protocol codecs: pure byte-in, byte-out code that never touches a socket.
