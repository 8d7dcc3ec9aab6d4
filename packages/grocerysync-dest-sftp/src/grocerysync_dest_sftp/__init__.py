"""GrocerySync ``sftp`` destination: item feed files uploaded atomically to an SFTP server."""

from grocerysync_dest_sftp.config import SftpConfig, SftpSecrets
from grocerysync_dest_sftp.connection import SftpError, connect
from grocerysync_dest_sftp.destination import SftpWriter, check, open_writer
from grocerysync_dest_sftp.plugin import DESTINATION

__all__ = ["DESTINATION", "SftpConfig", "SftpError", "SftpSecrets", "SftpWriter", "check", "connect", "open_writer"]
