"""dyncast-bgp: Dynamic Anycast (Dyncast / IETF CATS) control plane over BGP."""

__version__ = "0.1.0"
